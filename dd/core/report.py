"""Log messages: what a consumer did with a notice, on its way back to the source.

Every consumer publishes one for each notice it acts on, on topic
``v02.log.<directories>`` of its own exchange ``xs_<user>``; pumps route it back
to the exchange of the notice's source, ``xr_<source>``.  The format is
documented field by field in dd_log(7).  Like dd.core.notice, this module only
describes and judges; publishing is the flow's business.
"""
import dataclasses
import datetime
import json
import math
from typing import Any, Optional

from dd.core import topic
from dd.core.errors import NoticeError
from dd.core.formats.fields import load_json, parse_time, take
from dd.core.formats.v02 import TIME_FORMAT
from dd.core.notice import Checksum, Notice, check_name

TOPIC_PREFIX = "v02.log"
CONTENT_TYPE = "application/json"

@dataclasses.dataclass(frozen=True)
class Report:
    pubtime: datetime.datetime      # when the consumer finished with the notice (UTC)
    rel_path: str                   # the notice's identity: path, base URL, checksum, source
    base_url: str
    source: str
    from_cluster: str
    checksum: Optional[Checksum]
    block_number: Optional[int]     # for a part notice: which part
    code: int
    message: str
    rule: str                       # for refusals: the rule broken, e.g. dot-dot
    host: str                       # the consumer: its host, broker user and component
    user: str
    component: str
    duration: float                 # seconds
    bytes: int
    posted: Optional[datetime.datetime] = None  # the notice's pubtime: when its source posted it

    @property
    def topic(self) -> str:
        return topic.for_path(TOPIC_PREFIX, self.rel_path)


def of(notice: Notice, *, code: int, message: str, rule: str, host: str, user: str, component: str,
       duration: float, nbytes: int, pubtime: datetime.datetime) -> Report:
    """The log message for what a consumer did with `notice`."""
    return Report(pubtime=pubtime, rel_path=notice.rel_path, base_url=notice.base_url, source=notice.source,
                  from_cluster=notice.from_cluster, checksum=notice.checksum,
                  block_number=notice.part.block_number if notice.part else None, code=code,
                  message=message, rule=rule, host=host, user=user, component=component,
                  duration=round(duration, 6), bytes=nbytes, posted=notice.pubtime)


def encode(report: Report) -> tuple[bytes, dict[str, Any]]:
    """(body, headers) of a log message."""
    fields: dict[str, Any] = {
        "pubtime": report.pubtime.strftime(TIME_FORMAT), "rel_path": report.rel_path,
        "base_url": report.base_url, "source": report.source, "from_cluster": report.from_cluster,
        "code": report.code, "message": report.message, "rule": report.rule, "host": report.host,
        "user": report.user, "component": report.component, "duration": report.duration,
        "bytes": report.bytes,
    }
    if report.checksum is not None:
        fields["checksum"] = {"method": report.checksum.method, "value": report.checksum.value}
    if report.block_number is not None:
        fields["block_number"] = report.block_number
    if report.posted is not None:
        fields["posted"] = report.posted.strftime(TIME_FORMAT)
    return json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode(), {}


def decode(body: bytes) -> Report:
    """A Report from a message body, judged strictly: a wrong one is a NoticeError naming
    the field, so a router never passes on what it cannot read."""
    fields = load_json(body)
    given = take(fields, "checksum", dict, None)
    checksum: Optional[Checksum] = None
    if given is not None:
        given = dict(given)
        checksum = Checksum(take(given, "method", str), take(given, "value", str))
    posted = take(fields, "posted", str, None)
    duration = fields.pop("duration", None)
    if isinstance(duration, bool) or not isinstance(duration, (int, float)) or not math.isfinite(duration) \
            or duration < 0:
        raise NoticeError("log message field 'duration' must be a number of seconds", rule="type")
    report = Report(
        pubtime=parse_time(take(fields, "pubtime", str), "pubtime", (TIME_FORMAT,)),
        rel_path=take(fields, "rel_path", str), base_url=take(fields, "base_url", str),
        source=take(fields, "source", str), from_cluster=take(fields, "from_cluster", str),
        checksum=checksum, block_number=take(fields, "block_number", int, None),
        code=take(fields, "code", int), message=take(fields, "message", str), rule=take(fields, "rule", str),
        host=take(fields, "host", str), user=take(fields, "user", str),
        component=take(fields, "component", str), duration=float(duration), bytes=take(fields, "bytes", int),
        posted=parse_time(posted, "posted", (TIME_FORMAT,)) if posted is not None else None)
    if not 100 <= report.code <= 599:
        raise NoticeError(f"log message code {report.code} is not between 100 and 599", rule="code")
    if report.bytes < 0 or (report.block_number is not None and report.block_number < 0):
        raise NoticeError("log message counts must not be negative", rule="size")
    for name in ("rel_path", "source", "from_cluster", "host", "user", "component", "message", "rule"):
        check_name(getattr(report, name), name)
    return report
