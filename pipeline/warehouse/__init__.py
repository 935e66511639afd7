from pipeline.warehouse.warehouse import Warehouse, WarehouseError

__all__ = ["Warehouse", "WarehouseError"]
