"""Landing and lake resources, and the partition-aware lake IO managers.

dagster-aws has no Parquet IO manager for S3, and its pickle IO manager cannot be pointed at
a local folder, so the lake IO managers below serve both a folder and ``s3://`` through the
same byte store (``domain.storage``), with S3 clients from dagster-aws ``S3Resource``.
The raw tables of a daily drop are versioned and published by one commit (``domain.drop_commits``):
readers only see committed drops, at the committed version.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

import dagster as dg
import pandas as pd
from dagster_aws.s3 import S3Resource

from loyalty_assets.domain.bundles import ChurnBundle, SegmentationBundle, checked_bundle
from loyalty_assets.domain.drop_commits import DROP_TABLES, committed_drops, read_commit
from loyalty_assets.domain.ingest import SourceFile
from loyalty_assets.domain.lake_keys import (
    MODEL_SUFFIX,
    PARQUET_SUFFIX,
    asset_folder,
    asset_object_key,
    drop_date_of,
    drop_folder,
    manifest_key,
    table_version_key,
)
from loyalty_assets.domain.storage import (
    ObjectStore,
    dataframe_to_parquet_bytes,
    joblib_bytes_to_object,
    object_to_joblib_bytes,
    open_store,
    parquet_bytes_to_dataframe,
)

LAZY_PARTITIONS = {"lake/partitions": "lazy"}
"""Input metadata: hand the asset a dict of partition key -> loader for the partitions that exist."""

LANDING_SUFFIXES = (".csv", ".csv.gz", PARQUET_SUFFIX)


def store_at(uri: str, s3: S3Resource) -> ObjectStore:
    """The object store at a folder or an ``s3://`` prefix (an S3 client is made only for the latter)."""
    return open_store(uri, s3.get_client() if uri.startswith("s3://") else None)


class StoreResource(dg.ConfigurableResource):
    """An object store at a folder or ``s3://bucket/prefix``; S3 clients come from ``S3Resource``."""

    uri: str
    s3: S3Resource

    def store(self) -> ObjectStore:
        return store_at(self.uri, self.s3)


class LakeResource(StoreResource):
    """Where assets are persisted (``LOYALTY_LAKE_URI``)."""


class LandingResource(StoreResource):
    """The landing zone of the daily drops (``LOYALTY_LANDING_URI``)."""

    def drop_files(self, table: str, drop_date: str) -> tuple[str, list[SourceFile]]:
        """The folder and every data file of one table's drop, in name order."""
        store = self.store()
        folder = drop_folder(table, drop_date)
        keys = [key for key in store.list_keys(folder) if key.endswith(LANDING_SUFFIXES)]
        return store.url(folder), [SourceFile(name=store.url(key), data=store.get_bytes(key)) for key in keys]

    def drop_manifest(self, table: str, drop_date: str) -> tuple[str, bytes | None]:
        """The path of the table's ``_manifest.json`` for the drop, and its bytes (None when absent)."""
        store = self.store()
        key = manifest_key(drop_folder(table, drop_date))
        return store.url(key), store.get_bytes(key) if store.exists(key) else None

    def drop_dates(self, table: str) -> list[date]:
        """Every ``dt=`` date that holds files for ``table``."""
        dates = {drop_date_of(key) for key in self.store().list_keys(table)}
        return sorted(date.fromisoformat(drop_date) for drop_date in dates if drop_date is not None)


@dataclass(frozen=True)
class PartitionLoader:
    """Reads one stored partition when called; ``version`` is the committed version of a drop table."""

    read: Callable[[str], Any]
    key: str
    version: str | None = None

    def __call__(self) -> Any:
        return self.read(self.key)


class LakeIOManagerBase(dg.ConfigurableIOManager):
    """One object per asset partition: ``<asset>/<partition><suffix>``, or ``<asset><suffix>``.

    Writes replace the whole object atomically, so re-materializing a partition never appends.
    An output covering several partitions (a single-run backfill) is a dict keyed by partition.
    An input with ``LAZY_PARTITIONS`` metadata receives ``{partition: PartitionLoader}`` for the
    mapped partitions that exist; any other input must map to exactly one partition.

    The raw drop tables (``DROP_TABLES``) are written under the run's version,
    ``<asset>/<partition>/<run id>.parquet``, and read only at the version their drop's commit
    names: a drop that is not committed does not exist for readers.
    """

    lake: LakeResource

    suffix: str = ""

    def _serialize(self, value: Any) -> bytes:
        raise NotImplementedError

    def _deserialize(self, data: bytes) -> Any:
        raise NotImplementedError

    def object_key(self, asset_key: dg.AssetKey, partition_key: str | None) -> str:
        return asset_object_key("/".join(asset_key.path), partition_key, self.suffix)

    def _output_key(self, context: dg.OutputContext, partition_key: str | None) -> str:
        table = "/".join(context.asset_key.path)
        if table not in DROP_TABLES:
            return self.object_key(context.asset_key, partition_key)
        if partition_key is None:
            raise dg.Failure(f"{table} is a drop table: it is written one daily partition at a time")
        return table_version_key(table, partition_key, context.run_id)

    def stored_partitions(
        self, store: ObjectStore, asset_key: dg.AssetKey, partition_keys: list[str]
    ) -> dict[str, PartitionLoader]:
        """Loaders of the partitions among ``partition_keys`` that readers may see."""
        asset = "/".join(asset_key.path)
        if asset in DROP_TABLES:
            return {
                key: PartitionLoader(self._read(store), commit.tables[asset], commit.version)
                for key, commit in committed_drops(store, partition_keys).items()
            }
        existing = set(store.list_keys(asset_folder(asset)))
        object_keys = {key: self.object_key(asset_key, key) for key in sorted(partition_keys)}
        return {
            key: PartitionLoader(self._read(store), object_key)
            for key, object_key in object_keys.items()
            if object_key in existing
        }

    def _read(self, store: ObjectStore) -> Callable[[str], Any]:
        return lambda key: self._deserialize(store.get_bytes(key))

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        store = self.lake.store()
        if context.has_asset_partitions and len(context.asset_partition_keys) > 1:
            if not isinstance(obj, Mapping) or set(obj) != set(context.asset_partition_keys):
                raise dg.Failure(
                    f"{context.asset_key.to_user_string()}: an output for several partitions must be a dict "
                    "with one value per partition key"
                )
            values = dict(obj)
        else:
            values = {context.asset_partition_key if context.has_asset_partitions else None: obj}
        rows = 0
        keys = {partition_key: self._output_key(context, partition_key) for partition_key in values}
        for partition_key, value in values.items():
            store.put_bytes(keys[partition_key], self._serialize(value))
            if isinstance(value, pd.DataFrame):
                rows += len(value)
        metadata: dict[str, Any] = {"path": dg.MetadataValue.path(store.url(next(iter(keys.values()))))}
        if all(isinstance(value, pd.DataFrame) for value in values.values()):
            metadata["dagster/row_count"] = rows
        context.add_output_metadata(metadata)

    def load_input(self, context: dg.InputContext) -> Any:
        store = self.lake.store()
        asset_key = context.asset_key
        name = asset_key.to_user_string()
        if (context.definition_metadata or {}).get("lake/partitions") == "lazy":
            keys = context.asset_partition_keys if context.has_asset_partitions else []
            return self.stored_partitions(store, asset_key, list(keys))
        partition_key = None
        if context.has_asset_partitions:
            keys = context.asset_partition_keys
            if len(keys) != 1:
                raise dg.Failure(f"{name}: expected one upstream partition, the mapping gave {len(keys)}")
            partition_key = keys[0]
        if "/".join(asset_key.path) in DROP_TABLES:
            commit = read_commit(store, partition_key)
            if commit is None:
                raise dg.Failure(
                    f"{name} partition {partition_key}: the drop is not committed (not ingested, or rejected)"
                )
            return self._read(store)(commit.tables[name])
        key = self.object_key(asset_key, partition_key)
        try:
            return self._read(store)(key)
        except FileNotFoundError as error:
            where = f" partition {partition_key}" if partition_key else ""
            raise dg.Failure(f"{name}{where} is not in the lake ({store.url(key)}): materialize it first") from error


class LakeParquetIOManager(LakeIOManagerBase):
    """Tables (pandas DataFrames) as Parquet."""

    suffix: str = PARQUET_SUFFIX

    def _serialize(self, value: Any) -> bytes:
        if not isinstance(value, pd.DataFrame):
            raise TypeError(f"the Parquet IO manager stores DataFrames, got {type(value).__name__}")
        return dataframe_to_parquet_bytes(value)

    def _deserialize(self, data: bytes) -> Any:
        return parquet_bytes_to_dataframe(data)


class LakeModelIOManager(LakeIOManagerBase):
    """Model bundles (``domain.bundles``) as joblib ``.pkl``; reading anything else fails clearly."""

    suffix: str = MODEL_SUFFIX

    def _serialize(self, value: Any) -> bytes:
        return object_to_joblib_bytes(value)

    def _read(self, store: ObjectStore) -> Callable[[str], Any]:
        return lambda key: read_bundle(store, key)


def read_bundle(store: ObjectStore, key: str) -> ChurnBundle | SegmentationBundle:
    return checked_bundle(joblib_bytes_to_object(store.get_bytes(key)), store.url(key))


def latest_partition(partitions: Mapping[str, Callable[[], Any]], what: str, window: str) -> tuple[str, Any]:
    """The newest of the lazily loaded partitions, loaded; a clear failure when there is none."""
    if not partitions:
        raise dg.Failure(f"no materialized {what} partition in {window}: ingest a drop dated in that window first")
    key = max(partitions)
    return key, partitions[key]()


def read_champion(lake: LakeResource, asset_name: str) -> ChurnBundle | SegmentationBundle | None:
    """The promoted model bundle stored by ``LakeModelIOManager`` for ``asset_name``, or None before the first."""
    store = lake.store()
    key = LakeModelIOManager(lake=lake).object_key(dg.AssetKey(asset_name), None)
    return read_bundle(store, key) if store.exists(key) else None
