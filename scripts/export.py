"""Export a model's inference graph to TorchScript/ONNX (``hidiff-export``; see ``--help``)."""
import sys

from hidiff.cli.export import main

if __name__ == "__main__":
    sys.exit(main())
