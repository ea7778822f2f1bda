"""SpatiaLite local store: connection, migrations, one repository per resource, position outbox."""

from storage.spatialite import ExtensionLoadingUnsupported, SpatialiteNotFound, find_spatialite
from storage.store import Store, StoreClosed, default_store_path

__all__ = [
    "ExtensionLoadingUnsupported",
    "SpatialiteNotFound",
    "Store",
    "StoreClosed",
    "default_store_path",
    "find_spatialite",
]
