"""Write the JSON Schema of option files: ``python scripts/schema.py -o options/hidiff.schema.json``."""
import sys

from hidiff.config.json_schema import main

if __name__ == "__main__":
    sys.exit(main())
