"""The warehouse: where each table lives (`store`), atomic publishing (`atomic`), every table's name and
schema (`schemas`) and SQL over the tables (`sql`)."""

from cfmodel.warehouse.atomic import is_published, publish, withdraw, write_arrow, write_file
from cfmodel.warehouse.store import Warehouse

__all__ = ["Warehouse", "is_published", "publish", "withdraw", "write_arrow", "write_file"]
