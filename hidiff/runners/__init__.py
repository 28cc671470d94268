"""Front-end logic behind the thin scripts: test runs and the demo."""
