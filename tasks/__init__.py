"""Deploy stages, one module per component; deploy.py runs them in order."""
from functools import lru_cache

from kubelab.paths import spec_path
from kubelab.plan import load_plan


@lru_cache(maxsize=1)
def the_plan():
    """The plan, loaded once: pyinfra executes deploy.py once per host."""
    return load_plan(spec_path())
