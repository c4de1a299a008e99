"""Directory listings as web servers write them: nginx's autoindex and Apache's mod_autoindex.

A listing is HTML with one link per entry, followed by its modification time and size as
text (nginx: ``<a href="f">f</a>   10-Jan-2024 12:00   1234``; Apache: the same in a
``<pre>`` or in table cells, with sizes like ``1.2K``).  Only links to direct children of
the listed directory are entries: parent, sorting (``?C=N;O=D``), absolute and off-host
links are not, so a walk that follows the directories found never leaves the tree.
Times are read as UTC (nginx's default; Apache writes its local time).  Sizes written
exactly (digits) are kept; rounded ones (``1.2K``) are None, to be asked for (stat).
"""
from __future__ import annotations

import calendar
import html.parser
import re
import time
import urllib.parse

from dd.transfer import Entry

_TIME = re.compile(r"(\d{1,2}-[A-Za-z]{3}-\d{4}|\d{4}-\d{2}-\d{2}) (\d{2}:\d{2}(?::\d{2})?)")
_SIZE = re.compile(r"\s+(-|\d+(?:\.\d+)?[KMGTP]?)\b")


def parse(page: str, directory: str) -> list[Entry]:
    """The entries of the listing `page` of the decoded URL path `directory`, sorted by name."""
    if not directory.endswith("/"):
        directory += "/"
    parser = _Links()
    parser.feed(page)
    parser.close()
    entries: dict[str, Entry] = {}
    for href, text in parser.links:
        found = _child(href, directory)
        if found is None:
            continue
        name, is_directory = found
        size, mtime = _details(text)
        known = entries.get(name)
        if known is None or (known.mtime is None and mtime is not None):   # Apache: icon, then name
            entries[name] = Entry(name, is_directory, None if is_directory else size, mtime)
    return [entries[name] for name in sorted(entries)]


class _Links(html.parser.HTMLParser):
    """(href, the text after the link up to the next link or row) of each link."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[tuple[str, str]] = []
        self._after: list[str] | None = None
        self._href: str | None = None
        self._in_link = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._end()
            self._href = dict(attrs).get("href")
            self._after, self._in_link = [], True
        elif tag == "tr":
            self._end()

    def handle_endtag(self, tag: str) -> None:
        if tag == "a":
            self._in_link = False
        elif tag in ("tr", "pre", "table"):
            self._end()

    def handle_data(self, data: str) -> None:
        if self._after is not None and not self._in_link:
            self._after.append(data)

    def close(self) -> None:
        super().close()
        self._end()

    def _end(self) -> None:
        if self._after is not None and self._href:
            self.links.append((self._href, " ".join(self._after)))
        self._after, self._href = None, None


def _child(href: str, directory: str) -> tuple[str, bool] | None:
    """(name, is a directory) when `href` names a direct child of `directory`; else None."""
    parts = urllib.parse.urlsplit(href)
    if parts.scheme or parts.netloc or parts.query or parts.fragment or not parts.path:
        return None
    # A name that is not UTF-8 (%E9 for a Latin-1 é) keeps its bytes, for the caller to refuse.
    path = urllib.parse.unquote(parts.path, errors="surrogateescape")
    path = path if path.startswith("/") else directory + path
    if not path.startswith(directory):
        return None
    rest = path[len(directory):]
    is_directory = rest.endswith("/")
    name = rest[:-1] if is_directory else rest
    if name in ("", ".", "..") or "/" in name:
        return None
    return name, is_directory


def _details(text: str) -> tuple[int | None, float | None]:
    """(exact size, mtime) from the text after a link; None for what it does not say exactly."""
    found = _TIME.search(text)
    if found is None:
        return None, None
    day, clock = found.groups()
    layout = "%Y-%m-%d" if day[4:5] == "-" else "%d-%b-%Y"
    layout += " %H:%M:%S" if clock.count(":") == 2 else " %H:%M"
    try:
        mtime = float(calendar.timegm(time.strptime(f"{day} {clock}", layout)))
    except ValueError:
        return None, None
    size = _SIZE.match(text, found.end())
    exact = size is not None and size.group(1).isdigit()
    return (int(size.group(1)) if exact and size else None), mtime
