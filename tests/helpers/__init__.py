"""Builders, fakes and servers the tests share; no tests live here.

Why a package of its own: a test module that imports another test module runs that module's tests'
imports and fixtures as a side effect and ties the two files' names together, so shared helpers sit
here and tests import them as ``helpers.<module>`` (``tests/`` is on ``sys.path`` as the folder of the
rootdir conftest, and the bench scripts put it there themselves).
"""
