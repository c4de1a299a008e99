"""URLs that never show their password, and credentials.conf."""
import copy
import logging
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dd.core.credentials import Credentials, Url
from dd.core.errors import ConfigError

PASSWORD = "Pa55w0rd-XyZ"


def test_parse_fields_and_default_ports():
    url = Url.parse("amqps://bob:secret@Broker.Example.com/vhost?x=1")
    assert (url.scheme, url.user, url.host, url.port, url.path, url.query) == \
        ("amqps", "bob", "broker.example.com", 5671, "/vhost", "x=1")
    assert Url.parse("amqp://h").port == 5672
    assert Url.parse("amqp://h").path == "/"
    assert Url.parse("https://h/").port == 443
    assert Url.parse("sftp://ann@h:2222/data").port == 2222
    assert Url.parse("file:///data/x").host == ""
    assert Url.parse("file:///data/x").path == "/data/x"
    assert Url.parse("AMQP://h/").scheme == "amqp"


def test_str_round_trips_without_password():
    for text in ["amqps://bob@broker.example.com/", "sftp://ann@h:2222/data",
                 "http://[::1]:8080/x?y=z", "file:///data/x", "https://h/"]:
        assert str(Url.parse(text)) == text
    assert str(Url.parse("amqp://b%40x:p@h:5672/")) == "amqp://b%40x@h/"
    assert Url.parse("amqp://b%40x:p%3Aw@h/").user == "b@x"
    assert Url.parse("amqp://b%40x:p%3Aw@h/").password == "p:w"


@pytest.mark.parametrize("text, reason", [
    ("gopher://bob:pw@h/", "scheme"), ("amqp:///vhost", "no host"),
    ("amqp://bob:pw@h:port/", "port"), ("just words", "scheme"),
])
def test_bad_urls_say_why_without_echoing(text, reason):
    with pytest.raises(ValueError, match=reason) as caught:
        Url.parse(text)
    assert "pw" not in str(caught.value)


def _every_rendering(url):
    return [str(url), repr(url), f"{url}", f"{url!r}", "%s %r" % (url, url), format(url, ""),
            str([url]), str({"broker": url})]


@given(st.text(alphabet="PQWXZ0123456789!$&()*+,;=~", min_size=4, max_size=30))
def test_password_never_rendered(password):
    url = Url.parse("amqps://bob@broker.example.com/").with_password(password)
    assert url.password == password
    for text in _every_rendering(url):
        assert password not in text


def test_password_not_logged(caplog):
    url = Url.parse(f"amqps://bob:{PASSWORD}@h/")
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("connecting to %s (%r)", url, url)
    assert "bob@h" in caplog.text and PASSWORD not in caplog.text


def test_equality_and_hash_ignore_password():
    a = Url.parse("amqp://bob:one@h/")
    b = Url.parse("amqp://bob:two@h:5672/")
    assert a == b and hash(a) == hash(b) and a.password != b.password
    assert a != Url.parse("amqp://ann:one@h/")


def test_copies_keep_the_password():
    url = Url.parse(f"sftp://ann:{PASSWORD}@h/")
    assert pickle.loads(pickle.dumps(url)).password == PASSWORD
    assert copy.deepcopy(url).password == PASSWORD


def test_immutable():
    with pytest.raises(AttributeError):
        Url.parse("amqp://h/").user = "x"


def write(config_dir, text, mode=0o600):
    path = config_dir / "credentials.conf"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_missing_file_is_no_credentials(tmp_path):
    assert Credentials.load(tmp_path).password_for(Url.parse("amqp://bob@h/")) is None


@pytest.mark.parametrize("mode, access", [(0o644, "readable"), (0o640, "readable"),
                                          (0o604, "readable"), (0o620, "writable")])
def test_refuses_file_others_can_access(tmp_path, mode, access):
    path = write(tmp_path, f"amqp://bob:{PASSWORD}@h/\n", mode)
    with pytest.raises(ConfigError) as caught:
        Credentials.load(tmp_path)
    message = str(caught.value)
    assert message == (f"credentials file {path} is {access} by group/others "
                       f"(run: chmod 600 {path})")
    assert PASSWORD not in message


def test_lookup_by_scheme_user_host_port(tmp_path):
    write(tmp_path, "# passwords\n\n"
                    "amqps://bob:bobpw@broker.example.com/\n"
                    "  amqps://ann:annpw@broker.example.com/\n"
                    "amqp://bob:plainpw@broker.example.com/\n"
                    "sftp://bob:sshpw@files.example.com:2222/\n")
    creds = Credentials.load(tmp_path)
    assert creds.password_for(Url.parse("amqps://ann@broker.example.com/")) == "annpw"
    assert creds.password_for(Url.parse("amqps://bob@broker.example.com:5671/x")) == "bobpw"
    assert creds.password_for(Url.parse("amqp://bob@broker.example.com/")) == "plainpw"
    assert creds.password_for(Url.parse("sftp://bob@files.example.com:2222/")) == "sshpw"
    assert creds.password_for(Url.parse("sftp://bob@files.example.com/")) is None
    assert creds.password_for(Url.parse("amqps://eve@broker.example.com/")) is None
    assert creds.password_for(Url.parse("amqps://eve:own@broker.example.com/")) == "own"
    assert creds.password_for("https://bob@broker.example.com/x") is None
    assert creds.password_for("sftp://bob@files.example.com:2222/x/y") == "sshpw"


def test_an_http_line_is_for_its_scheme_host_port_and_the_paths_below_its_own(tmp_path):
    write(tmp_path, "https://bob:deep@h:8443/some/path/\n"
                    "https://bob:top@h:8443/\n"
                    "http://ann:plain@h/a\n")
    creds = Credentials.load(tmp_path)
    assert creds.password_for("https://h:8443/some/path/x") == "deep"
    assert creds.password_for("https://h:8443/some/path/sub/x") == "deep"
    assert creds.password_for("https://h:8443/some/pathology") == "top"
    assert creds.password_for("https://h:8443/x") == "top"
    assert creds.password_for("https://h/some/path/x") is None        # another port
    assert creds.password_for("http://h:8443/some/path/x") is None    # another scheme
    assert creds.password_for("https://g:8443/some/path/x") is None   # another host
    assert creds.password_for("http://h/a/x") == "plain"              # /a is the directory /a/
    assert creds.password_for("http://h/%61/x") == "plain"            # paths compare decoded
    assert creds.password_for("http://h/b/x") is None
    # A . or .. segment may resolve anywhere on the server: no line is for it.
    for path in ("/a/../b/x", "/a/%2E%2E/b/x", "/a/./x", "/a/.."):
        assert creds.password_for(f"http://h{path}") is None
    assert [url.password for url in creds.for_server(Url.parse("https://h:8443/"))] == ["deep", "top"]


def test_a_broker_sftp_or_ftp_line_is_for_the_whole_server(tmp_path):
    write(tmp_path, "amqps://bob:vhostpw@h/one\nsftp://ann:sshpw@h/home/ann/\n")
    creds = Credentials.load(tmp_path)
    assert creds.password_for("amqps://bob@h/two") == "vhostpw"
    assert creds.complete(Url.parse("amqps://h/")).password == "vhostpw"
    assert creds.password_for("sftp://ann@h/srv/x") == "sshpw"
    write(tmp_path, "ftps://ann:ftppw@h/home/ann/\n")
    creds = Credentials.load(tmp_path)
    assert creds.password_for("ftps://ann@h:21/srv/x") == "ftppw"


def test_complete_supplies_password_and_missing_user(tmp_path):
    write(tmp_path, "amqps://bob:bobpw@h/\n")
    creds = Credentials.load(tmp_path)
    url = creds.complete(Url.parse("amqps://h/"))
    assert (url.user, url.password) == ("bob", "bobpw")
    assert creds.complete(Url.parse("amqps://bob:mine@h/")).password == "mine"
    unknown = Url.parse("amqps://eve@h/")
    assert creds.complete(unknown) is unknown


@pytest.mark.parametrize("line, problem", [
    (f"gopher://bob:{PASSWORD}@h/", "not a URL"),
    (f"amqp://bob:{PASSWORD}@h/ extra", "one URL a line"),
    ("amqp://bob@h/", "no password"),
])
def test_bad_lines_name_file_and_line_without_the_password(tmp_path, line, problem):
    path = write(tmp_path, f"# first\n{line}\n")
    with pytest.raises(ConfigError, match=problem) as caught:
        Credentials.load(tmp_path)
    assert str(caught.value).startswith(f"{path}:2: ")
    assert PASSWORD not in str(caught.value)
