from spanpipe.warehouse.warehouse import Warehouse, WarehouseError

__all__ = ["Warehouse", "WarehouseError"]
