"""Session-wide test settings."""

import os

# check the mapping's invariants after every compile pass (a compile outside the tests checks them once,
# at the end): a broken pass is named where it breaks
os.environ.setdefault("ACOMPILE_VERIFY_EACH_PASS", "1")
