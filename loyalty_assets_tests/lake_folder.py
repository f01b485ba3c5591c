"""A lake in a local folder, as the Dagster layer reads it: tables and the churn champion written
where the IO managers look for them, and the resources that read them."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd
from dagster_aws.s3 import S3Resource

from loyalty_assets.defs.resources.storage import LakeModelIOManager, LakeParquetIOManager, LakeResource
from loyalty_assets.domain.bundles import ChurnBundle
from loyalty_assets.domain.storage import LocalStore, dataframe_to_parquet_bytes, object_to_joblib_bytes


class LakeFolder:
    def __init__(self, root: Path):
        self.resource = LakeResource(uri=str(root), s3=S3Resource())
        self.store = LocalStore(root)

    def put_table(self, asset: str, partition: str, frame: pd.DataFrame) -> None:
        key = LakeParquetIOManager(lake=self.resource).object_key(dg.AssetKey(asset), partition)
        self.store.put_bytes(key, dataframe_to_parquet_bytes(frame))

    def put_champion(self, bundle: ChurnBundle) -> None:
        key = LakeModelIOManager(lake=self.resource).object_key(dg.AssetKey("churn_model"), None)
        self.store.put_bytes(key, object_to_joblib_bytes(bundle))

    def resources(self) -> dict:
        return {
            "lake": self.resource,
            "lake_io_manager": LakeParquetIOManager(lake=self.resource),
            "model_io_manager": LakeModelIOManager(lake=self.resource),
        }
