"""file: URLs: local files."""
from __future__ import annotations

import os
from typing import Any, Optional

from dd.transfer import Capabilities, Check, Entry, ReadStream, Stat, Transport, entry_of, failures, replacing
from dd.transfer.copy import CopyResult, Source, copy


class FileTransport(Transport):
    capabilities = Capabilities(ranged_read=True, write=True, stat=True, list=True,
                                delete=True, rename=True, entries=True)

    def open_read(self, path: str, offset: int = 0, length: Optional[int] = None) -> ReadStream:
        where = self.endpoint.url(path)
        with failures(where):
            raw = open(path, "rb", buffering=0)
            raw.seek(offset)
        return ReadStream(raw, length, where)

    def stat(self, path: str) -> Stat:
        with failures(self.endpoint.url(path)):
            st = os.stat(path)
        return Stat(st.st_size, st.st_mtime)

    def write(self, path: str, stream: Source, check: Optional[Check] = None, **copy_options: Any) -> CopyResult:
        with failures(self.endpoint.url(path)):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with replacing(path, os.replace, os.unlink) as temporary:
                with open(temporary, "xb") as dst:
                    result = copy(stream, dst, **copy_options)
                if check:
                    check(temporary, result)
        return result

    def entries(self, path: str) -> list[Entry]:
        found = []
        with failures(self.endpoint.url(path)), os.scandir(path) as listing:
            for each in listing:
                try:
                    st = each.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue   # gone since it was listed
                entry = entry_of(each.name, st.st_mode, st.st_size, st.st_mtime)
                if entry is not None:
                    found.append(entry)
        return sorted(found, key=lambda entry: entry.name)

    def list(self, path: str) -> list[str]:
        with failures(self.endpoint.url(path)):
            return sorted(os.listdir(path))

    def delete(self, path: str) -> None:
        with failures(self.endpoint.url(path)):
            os.unlink(path)

    def rename(self, old: str, new: str) -> None:
        with failures(self.endpoint.url(old)):
            os.replace(old, new)

    def close(self) -> None:
        pass
