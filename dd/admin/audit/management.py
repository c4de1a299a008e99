"""RabbitMQ's management HTTP API: the few calls dd_audit needs (urllib3).

Every failure becomes one BrokerError line naming the call and the fix; the
administrator's password travels only in the Authorization header.
"""
import base64
import hashlib
import json
import urllib.parse
from http import HTTPStatus

import urllib3

from dd.core.errors import BrokerError

DEFAULT_PORT = 15672
#: rabbit_password_hashing_* → hash function: a stored hash is base64(salt[4] + H(salt + password)).
_HASHES = {"rabbit_password_hashing_sha256": hashlib.sha256, "rabbit_password_hashing_sha512": hashlib.sha512,
           "rabbit_password_hashing_md5": hashlib.md5}


def password_matches(user_record, password):
    """Whether the broker's stored hash is of `password` (so declare need not reset it)."""
    hasher = _HASHES.get(user_record.get("hashing_algorithm"))
    try:
        stored = base64.b64decode(user_record.get("password_hash") or "")
    except ValueError:
        return False
    if hasher is None or len(stored) < 5:
        return False
    salt = stored[:4]
    return hasher(salt + password.encode()).digest() == stored[4:]


def tags_of(user_record) -> list:
    """A user record's tags: a list since RabbitMQ 3.9, a comma-separated string before."""
    tags = user_record.get("tags") or []
    return [t for t in (tags.split(",") if isinstance(tags, str) else tags) if t]


class Management:
    def __init__(self, url, user, password, timeout=10.0):
        self.url = url.rstrip("/")
        self._headers = {**urllib3.make_headers(basic_auth=f"{user}:{password}"),
                         "Content-Type": "application/json"}
        self._pool = urllib3.PoolManager(timeout=urllib3.Timeout(total=timeout),
                                         retries=urllib3.Retry(total=2, connect=2, read=0, redirect=0))

    def _call(self, method, *path, body=None, missing_ok=False, headers=None):
        where = "/api/" + "/".join(urllib.parse.quote(p, safe="") for p in path)
        try:
            response = self._pool.request(method, self.url + where, headers={**self._headers, **(headers or {})},
                                          body=None if body is None else json.dumps(body))
        except urllib3.exceptions.HTTPError as error:
            reason = getattr(error, "reason", None) or error
            raise BrokerError(f"cannot reach the management API at {self.url}: {reason}",
                              fix="enable it: rabbitmq-plugins enable rabbitmq_management") from None
        if response.status == HTTPStatus.NOT_FOUND and missing_ok:
            return None
        if response.status == HTTPStatus.UNAUTHORIZED:
            raise BrokerError(f"the management API at {self.url} refused the administrator's login",
                              fix="check the admin URL's user and its password in credentials.conf")
        if response.status >= HTTPStatus.BAD_REQUEST:
            text = response.data.decode(errors="replace")[:200]
            raise BrokerError(f"management API {method} {where}: {response.status} {text}")
        return json.loads(response.data) if response.data else None

    def get(self, *path):
        """The object at path, or None when there is none."""
        return self._call("GET", *path, missing_ok=True)

    def put(self, *path, body):
        self._call("PUT", *path, body=body)

    def post(self, *path, body):
        """POST body to path; what the API answered, if anything."""
        return self._call("POST", *path, body=body)

    def delete(self, *path, reason: str = ""):
        """Delete what path names, if it is still there; `reason` is what a closed
        connection's client is told."""
        self._call("DELETE", *path, missing_ok=True, headers={"X-Reason": reason} if reason else None)
