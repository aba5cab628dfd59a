"""Store: the local audit store, one SQLite file. Its schema (`schema`), connections and transactions
(`connection`), and `Store`, which writes spans and reads them back by model version, time, decision
id or input hash. Imports `codec` and the foundation modules; never the audit worker or the sinks.
"""

from otel_rai.errors import StoreError
from otel_rai.store.store import Store, default_path, location

__all__ = ["Store", "StoreError", "default_path", "location"]
