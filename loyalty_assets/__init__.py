"""Airline loyalty churn prediction and segmentation as Dagster assets.

``from loyalty_assets import defs`` builds the code location on first use; importing a domain
module or the command line builds nothing and imports no Dagster.
"""

__all__ = ["defs"]


def __getattr__(name: str):
    if name == "defs":
        from loyalty_assets.definitions import defs

        return defs
    raise AttributeError(f"module 'loyalty_assets' has no attribute {name!r}")
