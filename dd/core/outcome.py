"""What happened to one notice: the outcome every step reports, and its code."""
import dataclasses


@dataclasses.dataclass
class Outcome:
    """What happened to one notice; codes are HTTP-like: see dd_subscribe(1)."""

    code: int              # 201 delivered, 202 part stored, 304 had it already, 4xx refused, 5xx failed
    message: str = ""
    rule: str = ""
    local_path: str = ""
    nbytes: int = 0
    checksum: object = None  # verified or computed on download; a 304's: of the whole file, in place
    duration: float = 0.0

    @property
    def ok(self):
        return self.code < 400
