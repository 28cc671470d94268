"""Run the demo: synthetic blur from bundled photos -> stage 1 -> stage 2 -> test table + comparison picture."""
import sys

from hidiff.runners.demo import main

if __name__ == "__main__":
    sys.exit(main())
