"""Airline loyalty churn prediction and segmentation as Dagster assets.

``from loyalty_assets import defs`` gives the code location's ``Definitions``, built on first use:
importing a domain module or the command line builds nothing and imports no Dagster.
"""

import sys
import types

__all__ = ["defs"]


class _Package(types.ModuleType):
    """``loyalty_assets.defs`` is the Definitions, although the Dagster layer is a subpackage of the
    same name: the import system's binding of that subpackage (it stays in ``sys.modules``) is ignored."""

    @property
    def defs(self):
        from loyalty_assets.definitions import defs

        return defs

    @defs.setter
    def defs(self, subpackage: types.ModuleType) -> None:
        pass


sys.modules[__name__].__class__ = _Package
