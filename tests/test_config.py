"""The config language: files, includes, variables, masks, command line and show."""
import dataclasses
import io
from pathlib import Path

import pytest

from dd.core import config, options
from dd.core.config import load, take_options
from dd.core.environment import Environment
from dd.core.errors import ConfigError

PASSWORD = "s3cret-Pa55"


@pytest.fixture
def env(tmp_path):
    (tmp_path / "config").mkdir()
    return Environment(stdout=io.StringIO(), stderr=io.StringIO(),
                       config_dir=tmp_path / "config", state_dir=tmp_path / "state",
                       log_dir=tmp_path / "log",
                       environ={"HOSTNAME": "node1", "USER": "ops", "DATA": "/srv/data"})


def write(path, text, mode=0o644):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def conf(env, text, component="subscribe", name="test"):
    return write(env.config_dir / component / f"{name}.conf", text)


def error(*args):
    with pytest.raises(ConfigError) as caught:
        load(*args)
    assert "\n" not in str(caught.value)
    return str(caught.value)


def test_defaults_without_any_file(env):
    cfg = load("subscribe", None, [], env)
    assert (cfg.name, cfg.file, cfg.masks) == (None, None, ())
    assert cfg.exchange == "xpublic"
    assert cfg.topic_prefix == "v02.post"
    assert cfg.subtopic == ("#",)
    assert cfg.prefetch == 200
    assert cfg.expire == 300.0
    assert cfg.max_notice_size == 1 << 20
    assert cfg.mirror is True and cfg.strip == 0 and cfg.flatten == "/"
    assert cfg.directory == Path(".")
    assert cfg.broker is None and cfg.queue is None
    assert cfg.allowed_schemes == ("http", "https", "sftp", "ftp", "ftps")
    assert cfg.origin("prefetch") == "default"
    with pytest.raises(AttributeError):
        cfg.prefech  # noqa: B018 - the attribute access is what is tested


def test_values_origins_and_comments(env):
    path = conf(env, "# whole-line comment\n"
                     "\n"
                     "   # indented comment\n"
                     "prefetch 10   # trailing comment\n"
                     "subtopic #\n"
                     "subtopic a.#  # all of a\n"
                     "subtopic b.# #\n"
                     "accept .*#.*\n"
                     "expire\t1d\n"
                     "blocksize 64M\n"
                     "fsync\n"
                     "to_clusters east, west\n")
    cfg = load("subscribe", "test", [], env)
    assert cfg.prefetch == 10
    assert cfg.origin("prefetch") == f"{path}:4"
    assert cfg.subtopic == ("#", "a.#", "b.#")
    assert cfg.origin("subtopic") == f"{path}:5, {path}:6, {path}:7"
    assert cfg.masks[0].pattern.pattern == ".*#.*"
    assert cfg.expire == 86400.0
    assert cfg.blocksize == 64 << 20
    assert cfg.fsync is True
    assert cfg.to_clusters == ("east", "west")


def test_later_values_replace_earlier_and_default_conf_comes_first(env):
    write(env.config_dir / "default.conf", "prefetch 5\nlog_level debug\n")
    conf(env, "prefetch 7\nprefetch 8\n")
    cfg = load("subscribe", "test", [], env)
    assert cfg.prefetch == 8
    assert cfg.log_level == "debug"
    assert cfg.origin("log_level") == f"{env.config_dir / 'default.conf'}:2"


def test_config_name_or_path(env, tmp_path):
    conf(env, "prefetch 3\n", name="weather")
    assert load("subscribe", "weather", [], env).prefetch == 3
    assert load("subscribe", "weather.conf", [], env).name == "weather"
    elsewhere = write(tmp_path / "other" / "mine.conf", "prefetch 4\n")
    cfg = load("subscribe", str(elsewhere), [], env)
    assert (cfg.prefetch, cfg.name, cfg.file) == (4, "mine", elsewhere)


def test_missing_config_names_the_file(env):
    path = env.config_dir / "subscribe" / "nope.conf"
    assert error("subscribe", "nope", [], env) == (
        f"no configuration 'nope' for dd_subscribe: {path} does not exist "
        f"(create it, or give a path like ./nope.conf)")
    assert "does not exist" in error("subscribe", "./nope.conf", [], env)


def test_unknown_option_suggests(env):
    path = conf(env, "prefetch 1\nacept .*\n")
    assert error("subscribe", "test", [], env) == \
        f"{path}:2: unknown option 'acept' (did you mean 'accept'?)"
    conf(env, "inclde x.conf\n")
    assert "did you mean 'include'?" in error("subscribe", "test", [], env)
    conf(env, "zzzzzz 1\n")
    assert error("subscribe", "test", [], env).endswith("unknown option 'zzzzzz' "
                                                        "(dd_options(5) lists the options)")


@pytest.mark.parametrize("line, expected", [
    ("blocksize lots", "bad blocksize value 'lots' (expected a size like 64M"),
    ("expire soon", "bad expire value 'soon' (expected a duration like 30s"),
    ("mirror maybe", "bad mirror value 'maybe' (expected on or off"),
    ("prefetch -3", "bad prefetch value '-3': must be at least 0 (expected a whole number"),
    ("checksum crc", "bad checksum value 'crc' (expected one of sha512, sha256"),
    ("accept (x", "bad accept value '(x': missing ), unterminated subpattern"),
    ("prefetch", "prefetch needs a value (expected a whole number"),
])
def test_bad_values_name_file_line_option_value_and_form(env, line, expected):
    path = conf(env, f"# first\n{line}\n")
    assert error("subscribe", "test", [], env).startswith(f"{path}:2: {expected}")


def test_bad_url_value_never_echoes_the_password(env):
    conf(env, f"broker ftp://bob:{PASSWORD}@h/\n")
    message = error("subscribe", "test", [], env)
    assert "bad broker value: scheme must be" in message
    assert PASSWORD not in message


def test_includes_nest_relative_to_the_including_file(env, tmp_path):
    write(env.config_dir / "subscribe" / "common" / "a.conf", "include b.conf\nprefetch 2\n")
    b = write(env.config_dir / "subscribe" / "common" / "b.conf", "exchange xb\n")
    write(tmp_path / "abs.conf", "queue q_abs\n")
    conf(env, "include common/a.conf\ninclude ${ROOT}/abs.conf\n")
    env.environ = {**env.environ, "ROOT": str(tmp_path)}
    cfg = load("subscribe", "test", [], env)
    assert (cfg.prefetch, cfg.exchange, cfg.queue) == (2, "xb", "q_abs")
    assert cfg.origin("exchange") == f"{b}:1"


def test_same_file_twice_is_not_a_loop(env):
    write(env.config_dir / "subscribe" / "sub.conf", "subtopic x.#\n")
    conf(env, "include sub.conf\ninclude sub.conf\n")
    assert load("subscribe", "test", [], env).subtopic == ("x.#", "x.#")


def test_include_loop_is_an_error(env):
    a = env.config_dir / "subscribe" / "a.conf"
    b = write(env.config_dir / "subscribe" / "b.conf", "prefetch 1\ninclude a.conf\n")
    write(a, "include b.conf\n")
    message = error("subscribe", "a", [], env)
    assert message.startswith(f"{b}:2: include loop: {a} -> {b} -> {a}")


def test_missing_include_names_the_line(env):
    path = conf(env, "include nothere.conf\n")
    message = error("subscribe", "test", [], env)
    assert message.startswith(f"{path}:1: cannot read {path.parent / 'nothere.conf'}: ")
    conf(env, "include\n")
    assert "include needs a file name" in error("subscribe", "test", [], env)


def test_include_allow_names_options_but_never_its_own(env):
    conf(env, "include_allow subtopic,on_file\n")
    assert load("subscribe", "test", [], env).include_allow == ("subtopic", "on_file")
    conf(env, "include_allow subtopik\n")
    assert "bad include_allow value 'subtopik': unknown option 'subtopik'" in error("subscribe", "test", [], env)
    conf(env, "include_allow subtopic include_allow\n")
    assert "include_allow is never left to a remote include" in error("subscribe", "test", [], env)
    conf(env, "include ftp://host/a.conf\n")
    assert "a remote include is fetched over https only" in error("subscribe", "test", [], env)


def test_variables(env):
    conf(env, "broker amqps://bob@h/\n"
              "queue q_${BROKER_USER}.${CONFIG}.${HOSTNAME}.${USER}.${COMPONENT}\n"
              "directory ${DATA}/in\n")
    cfg = load("subscribe", "test", [], env)
    assert cfg.queue == "q_bob.test.node1.ops.subscribe"
    assert cfg.directory == Path("/srv/data/in")


def test_unknown_variable_is_an_error(env):
    path = conf(env, "prefetch 1\ndirectory ${NOPE}/x\n")
    message = error("subscribe", "test", [], env)
    assert message.startswith(f"{path}:2: unknown variable ${{NOPE}} (set it in the environment")


def test_broker_user_before_broker_is_an_error(env):
    path = conf(env, "queue q_${BROKER_USER}\nbroker amqps://bob@h/\n")
    assert error("subscribe", "test", [], env) == (
        f"{path}:1: ${{BROKER_USER}} has no value here "
        "(put a broker line with a user above this line)")


def test_component_defaults_follow_the_post_broker(env):
    cfg = load("post", None, [("post_broker", "amqps://alice@h/")], env)
    assert cfg.post_exchange == "xs_alice"
    assert cfg.source == "alice"
    assert cfg.origin("post_exchange") == "default"
    assert load("shovel", None, [("post_broker", "amqps://alice@h/")], env).post_exchange \
        == "xpublic"
    unset = load("post", None, [], env)
    assert unset.post_exchange is None and unset.source is None


def test_broker_user_from_credentials(env):
    write(env.config_dir / "credentials.conf", "amqps://carol:pw@h/\n", mode=0o600)
    cfg = load("post", None, [("post_broker", "amqps://h/")], env)
    assert cfg.post_exchange == "xs_carol"
    assert (cfg.post_broker.user, cfg.post_broker.password) == ("carol", "pw")


def test_credentials_permissions_are_checked_on_load(env):
    path = write(env.config_dir / "credentials.conf", "amqps://carol:pw@h/\n", mode=0o644)
    assert error("post", None, [], env) == (
        f"credentials file {path} is readable by group/others (run: chmod 600 {path})")


def test_masks_take_the_settings_above_them(env):
    path = conf(env, "directory /data/text\n"
                     "strip 1\n"
                     "accept .*\\.txt\n"
                     "reject .*secret.*\n"
                     "directory /data/other\n"
                     "mirror off\n"
                     "flatten -\n"
                     "accept .*\\.(png|gif)\n"
                     "accept .*secret.*\n"
                     "directory /data/rest\n")
    cfg = load("subscribe", "test", [], env)
    text = cfg.match("/a/b/notes.txt")
    assert (text.directory, text.mirror, text.strip, text.flatten, text.origin) == \
        (Path("/data/text"), True, 1, "/", f"{path}:3")
    image = cfg.match("a/pic.png")
    assert (image.directory, image.mirror, image.flatten) == (Path("/data/other"), False, "-")
    assert cfg.match("a/secret.txt").origin == f"{path}:3", "the first match wins"
    assert cfg.match("a/secret.png") is None, "the first match wins"
    assert cfg.decide("a/secret.png").origin == f"{path}:4"
    assert cfg.match("notes.txt.bak") is None, "patterns match the whole path"
    assert cfg.accept_unmatched is False
    assert cfg.origin("accept_unmatched") == "default: an accept line"
    assert cfg.directory == Path("/data/rest")
    assert [m.accept for m in cfg.masks] == [True, False, True, True]
    assert [p.pattern for p in cfg.accept] == [".*\\.txt", ".*\\.(png|gif)", ".*secret.*"]


def test_unmatched_paths_take_the_last_settings(env):
    conf(env, "reject .*\\.tmp\ndirectory /data/in\nmirror no\n")
    cfg = load("subscribe", "test", [], env)
    assert cfg.accept_unmatched is True
    assert cfg.origin("accept_unmatched") == "default: no accept line"
    assert cfg.match("x.tmp") is None
    kept = cfg.match("a/b.dat")
    assert (kept.accept, kept.directory, kept.mirror) == (True, Path("/data/in"), False)
    assert kept.origin == "default: no accept line"
    conf(env, "accept_unmatched off\nreject .*\\.tmp\n")
    assert load("subscribe", "test", [], env).match("a/b.dat") is None


def test_take_options_separates_options_and_positionals():
    argv = ["--post_broker", "amqps://bob@h/", "--post_base_dir", "/data", "/data/a", "/data/b"]
    assert take_options(argv, "post") == (
        [("post_broker", "amqps://bob@h/"), ("post_base_dir", "/data")], ["/data/a", "/data/b"])


def test_take_options_forms():
    argv = ["start", "--fsync", "--mirror", "off", "--log_reports", "weather",
            "--prefetch=5", "--accept", ".*", "--", "--not-an-option", "--prefetch", "6"]
    assert take_options(argv, "subscribe") == (
        [("fsync", "on"), ("mirror", "off"), ("log_reports", "on"), ("prefetch", "5"),
         ("accept", ".*")], ["start", "weather", "--", "--not-an-option", "--prefetch", "6"])


def test_take_options_leaves_the_commands_own_flags_and_unknown_ones():
    # dd.core.commandline hands them to the command's parser, which names an unknown one.
    argv = ["--config", "x", "--delete", "--acept", "y", "-v", "--post_topic_prefix=v03", "a"]
    assert take_options(argv, "post") == (
        [("post_topic_prefix", "v03")], ["--config", "x", "--delete", "--acept", "y", "-v", "a"])


@pytest.mark.parametrize("argv, message", [
    (["--blocksize"], "option --blocksize needs a value (expected a size like 64M"),
    (["--blocksize", "--checksum", "md5"], "option --blocksize needs a value"),
    (["--directory", "/x"], "option --directory is not used by dd_post "
                            "(only dd_subscribe, dd_sara, dd_sender use it)"),
])
def test_take_options_errors(argv, message):
    with pytest.raises(ConfigError) as caught:
        take_options(argv, "post")
    assert str(caught.value).startswith(message)


def test_command_line_comes_after_files(env):
    conf(env, "prefetch 7\ndirectory /files\naccept .*\\.txt\n")
    cli, _ = take_options(["--prefetch", "9", "--directory", "/cli", "--accept", ".*\\.dat"],
                        "subscribe")
    cfg = load("subscribe", "test", cli, env)
    assert cfg.prefetch == 9
    assert cfg.origin("prefetch") == "command line"
    assert cfg.match("a.txt").directory == Path("/files")
    assert cfg.match("a.dat").directory == Path("/cli")
    assert cfg.match("a.dat").origin == "command line"


def test_bad_command_line_value(env):
    assert error("subscribe", None, [("expire", "later")], env).startswith(
        "command line: bad expire value 'later' (expected a duration")


def test_require(env):
    cfg = load("post", None, [], env)
    with pytest.raises(ConfigError) as caught:
        cfg.require("post_broker")
    assert str(caught.value) == ("dd_post needs post_broker (set it in the configuration or "
                                 "with --post_broker: a URL like amqps://user@host/ or mqtts://user@host/, "
                                 "or several separated by spaces)")
    load("post", None, [("post_broker", "amqp://h/")], env).require("post_broker")


def test_render_shows_this_components_options_with_origins(env):
    path = conf(env, "broker amqps://bob@h/\nprefetch 3\ndirectory /d\naccept .*\\.txt\n")
    text = load("subscribe", "test", [("fsync", "on")], env).render()
    assert text.startswith(f"# dd_subscribe test: {path}\n")
    lines = {line.split("#")[0].strip(): line.split("#")[-1].strip()
             for line in text.splitlines() if not line.startswith("#")}
    assert lines["prefetch 3"] == f"{path}:2"
    assert lines["fsync on"] == "command line"
    assert lines["exchange xpublic"] == "default"
    assert lines["directory /d"] == f"{path}:3"
    assert "# queue is unset" in text
    assert "blocksize" not in text, "dd_subscribe does not use blocksize"
    assert text.index("directory /d") < text.index("accept .*\\.txt")


def test_render_never_shows_passwords(env):
    write(env.config_dir / "credentials.conf", f"amqps://bob:{PASSWORD}@h/\n", mode=0o600)
    conf(env, "broker amqps://bob@h/\n", component="sara")
    cfg = load("sara", "test", [("post_broker", f"amqps://ann:{PASSWORD}x@p/")], env)
    assert cfg.broker.password == PASSWORD and cfg.post_broker.password == PASSWORD + "x"
    text = cfg.render()
    assert "broker amqps://bob@h/" in text and "post_broker amqps://ann@p/" in text
    assert "with a password" in text
    assert PASSWORD not in text and PASSWORD not in repr(cfg.broker)


def test_render_redacts_sensitive_options(env, monkeypatch):
    secret = dataclasses.replace(options.BY_NAME["source"], sensitive=True)
    table = tuple(secret if o.name == "source" else o for o in options.OPTIONS)
    monkeypatch.setattr(config, "OPTIONS", table)
    monkeypatch.setitem(config.BY_NAME, "source", secret)
    cfg = load("post", None, [("source", "topsecret")], env)
    assert cfg.source == "topsecret"
    text = cfg.render()
    assert "source (redacted)" in text and "topsecret" not in text
    with pytest.raises(ConfigError) as caught:
        load("post", None, [("source", "two words")], env)
    assert "two words" not in str(caught.value)


def test_render_reads_back_as_the_same_configuration(env, tmp_path):
    write(env.config_dir / "default.conf", "log_level warning\n")
    conf(env, "broker amqps://bob@h:5000/\nsubtopic a.#\nsubtopic b.*\nexpire 90s\n"
              "reject .*\\.tmp\ndirectory /d\nstrip 2\naccept .*#.*\nflatten _\n", "sara")
    first = load("sara", "test", [("rate_max", "10M")], env)
    shown = write(tmp_path / "shown" / "test.conf", first.render())
    again = load("sara", str(shown), [], env)
    for option in options.OPTIONS:
        if "sara" in option.components and option.kind is not options.PATTERN:
            assert getattr(again, option.name) == getattr(first, option.name), option.name
    assert [(m.pattern.pattern, m.accept, m.directory, m.mirror, m.strip, m.flatten)
            for m in again.masks] == \
        [(m.pattern.pattern, m.accept, m.directory, m.mirror, m.strip, m.flatten)
         for m in first.masks]


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parent.parent / "config").glob("*/*.conf")),
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_example_configurations_load(env, path):
    assert load(path.parent.name, str(path), [], env).name == path.stem
