"""Profile a model: ``hidiff-profile`` (hidiff/cli/profile.py) from a checkout.

    python scripts/profile.py -opt options/test_gopro.yml --size 256x256 [--device cuda]

This file shares its name with the standard library's ``profile`` module, which
torch imports (through cProfile).  Every script in this folder runs with the folder
on ``sys.path``, so ``import profile`` there finds this file: imported under that
name, it loads the standard module and puts it in its place.
"""
import os
import sys

if __name__ != "__main__":
    import importlib.util
    import sysconfig

    _spec = importlib.util.spec_from_file_location(
        __name__, os.path.join(sysconfig.get_paths()["stdlib"], "profile.py"))
    _std = importlib.util.module_from_spec(_spec)
    sys.modules[__name__] = _std  # the import statement returns this module
    _spec.loader.exec_module(_std)
else:
    _HERE = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
    if os.path.dirname(_HERE) not in sys.path:
        sys.path.insert(0, os.path.dirname(_HERE))

    from hidiff.cli.profile import main

    sys.exit(main())
