"""The `file_storage` extension: a directory where components keep state on disk.

```yaml
extensions:
  file_storage:
    directory: ./data/file_storage
    fsync: false             # true: survive a power loss too, at the cost of one fsync per request
    create_directory: true   # otelcol defaults to false; a missing directory is created here
service:
  extensions: [file_storage]
```
An exporter's `sending_queue::storage: file_storage` keeps its queue in
`<directory>/exporter_<type>_<name>/`, as otelcol's persistent queue does.
"""

from __future__ import annotations

from pathlib import Path

from spanpipe.component import Extension
from spanpipe.component import ComponentConfig
from spanpipe.registry import Factory


class FileStorageConfig(ComponentConfig):
    directory: str = "./data/file_storage"
    fsync: bool = False
    create_directory: bool = True

    def validate_config(self) -> None:
        if not self.directory:
            raise ValueError("directory: must name a directory")


class FileStorageExtension(Extension):
    def __init__(self, component_id: str, config: FileStorageConfig) -> None:
        super().__init__(component_id)
        self.directory = Path(config.directory)
        self.fsync = config.fsync
        self.create_directory = config.create_directory

    def start(self) -> None:
        if self.create_directory:
            self.directory.mkdir(parents=True, exist_ok=True)
        if not self.directory.is_dir():
            raise RuntimeError(f"{self.id}: directory {self.directory} does not exist "
                               "(create it, or set create_directory: true)")

    def directory_for(self, component_id: str) -> Path:
        return self.directory / ("exporter_" + component_id.replace("/", "_"))


factory = Factory("file_storage", "extensions", FileStorageConfig,
                  lambda cid, cfg: FileStorageExtension(cid, cfg), capabilities=("storage",))
