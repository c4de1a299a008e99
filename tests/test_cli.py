"""Every dd_* command's command line as a user meets it: --help on stdout with exit status 0;
a usage error as one line on stderr that names what is wrong and shows the usage, with
exit status 2; the options table's --name value beside the command's own flags."""
import dataclasses
import io

import pytest

from dd.cli import main
from dd.core import commandline, commands, config
from dd.core.environment import Environment


@pytest.fixture
def env(tmp_path):
    return Environment(stdout=io.StringIO(), stderr=io.StringIO(), config_dir=tmp_path / "config",
                       state_dir=tmp_path / "state", log_dir=tmp_path / "log", environ={})


def dd(command, *argv, env):
    env = dataclasses.replace(env, stdout=io.StringIO(), stderr=io.StringIO())
    status = main.run(command, argv, env)
    return status, env.stdout.getvalue(), env.stderr.getvalue()


def assert_usage_error(result, command, *named):
    status, out, err = result
    assert (status, out) == (2, ""), err
    assert err.startswith(f"dd_{command}: ") and err.endswith("\n") and err.count("\n") == 1, err
    for text in named:
        assert text in err, err


@pytest.mark.parametrize("flag", ["--help", "-h"])
@pytest.mark.parametrize("command", commands.COMMANDS)
def test_help_is_printed_on_the_commands_stdout(command, flag, env, capsys):
    status, out, err = dd(command, flag, env=env)
    assert (status, err) == (0, "")
    assert out.startswith(f"usage: dd_{command} ") and "--help" in out
    assert capsys.readouterr() == ("", "")     # not on the process's own streams


@pytest.mark.parametrize("argv", [("ctl", "status"), ("ctl", "foreground"), ("audit", "declare"),
                                  ("audit", "cleanup")], ids=" ".join)
def test_a_verb_has_its_own_help(argv, env):
    status, out, err = dd(*argv, "--help", env=env)
    assert (status, err) == (0, "")
    assert out.startswith(f"usage: dd_{' '.join(argv)} ")


@pytest.mark.parametrize("command", commands.COMMANDS)
def test_a_bad_flag_is_one_line_naming_it_and_the_usage(command, env):
    assert_usage_error(dd(command, "--frobnicate", env=env), command, "'--frobnicate'", f"usage: dd_{command} ")


@pytest.mark.parametrize("argv", [
    ("post", "a.txt", "-v"), ("subscribe", "status", "x", "--frobnicate"), ("log", "--json", "--frobnicate"),
    ("audit", "declare", "--dry-run", "--frobnicate"), ("ctl", "status", "subscribe/x", "--frobnicate"),
], ids=" ".join)
def test_a_bad_flag_among_good_arguments_is_named(argv, env):
    bad = argv[-1]
    assert_usage_error(dd(*argv, env=env), argv[0], f"'{bad}'", f"usage: dd_{argv[0]} ")


@pytest.mark.parametrize("argv, named", [
    (("post",), ["no PATH to announce"]),
    (("post", "--delete", "--config"), ["--config", "expected one argument"]),
    (("subscribe",), ["expected ACTION CONFIG, got nothing"]),
    (("watch", "start"), ["expected ACTION CONFIG, got start"]),
    (("sara", "frobnicate", "x"), ["'frobnicate'", "foreground", "cleanup"]),
    (("shovel", "status", "x", "y"), ["unexpected argument 'y'"]),
    (("subscribe", "start", "x", "--instance", "two"), ["--instance", "'two'"]),
    (("audit",), ["no VERB given", "declare, status, cleanup"]),
    (("audit", "declare", "extra"), ["unexpected argument 'extra'"]),
    (("ctl",), ["no VERB given", "status, check"]),
    (("ctl", "frobnicate"), ["'frobnicate'"]),
    (("ctl", "foreground", "subscribe/x", "--instance", "q"), ["--instance", "usage: dd_ctl foreground "]),
    (("log", "a", "b"), ["unexpected argument 'b'"]),
], ids=lambda value: " ".join(value) if isinstance(value, tuple) else "")
def test_a_usage_error_is_one_line_with_the_usage(argv, named, env):
    assert_usage_error(dd(*argv, env=env), argv[0], *named, "usage: dd_")


def test_a_mistyped_option_of_the_table_is_named_with_the_closest_one(env):
    assert_usage_error(dd("post", "--acept", ".*", "a.txt", env=env), "post",
                       "unknown option '--acept' (did you mean '--accept'?)")


def test_no_flag_is_guessed_from_its_first_letters(env):
    # --inst is neither the hidden --instance nor the table's --instances.
    assert_usage_error(dd("subscribe", "status", "x", "--inst", "2", env=env), "subscribe",
                       "unknown option '--inst'")
    assert_usage_error(dd("audit", "declare", "--dry", env=env), "audit", "unknown option '--dry'")


def test_dd_ctl_takes_no_option_of_the_table(env):
    assert_usage_error(dd("ctl", "status", "--prefetch", "3", env=env), "ctl", "unknown option '--prefetch'")


def test_options_of_the_table_go_anywhere_among_the_commands_own(env):
    args, options = commandline.parse(main.parser("audit"), ["--queue_limit", "9", "declare", "--dry-run",
                                                             "--admin=amqp://root@h/", "--prune"], env, "audit")
    assert (args.verb, args.dry_run, args.prune) == ("declare", True, True)
    assert options == [("queue_limit", "9"), ("admin", "amqp://root@h/")]


def test_after_a_double_dash_everything_is_a_path(env):
    args, options = commandline.parse(main.parser("post"), ["--post_exchange", "xs_a", "--", "--delete", "-x",
                                                            "--post_exchange"], env, "post")
    assert (args.paths, args.delete, options) == (["--delete", "-x", "--post_exchange"], False,
                                                  [("post_exchange", "xs_a")])


@pytest.mark.parametrize("command", sorted(commands.ABOUT))
def test_help_gives_purpose_actions_common_options_and_a_working_example(command, env, tmp_path):
    about = commands.ABOUT[command]
    status, out, _ = dd(command, "--help", env=env)
    assert status == 0
    assert " ".join(about.purpose.split()) in " ".join(out.split())
    assert about.purpose.endswith(".") and about.purpose.count(". ") == 0     # one sentence
    daemon = command in commands.COMPONENTS and command != "post"
    assert ("actions:" in out) == daemon
    if daemon:
        assert all(f"\n  {action} " in out for action in commands.ACTIONS)
    assert all(f"\n  {name} " in out for name in about.options)
    assert about.example in out
    assert max(map(len, out.splitlines())) <= 88
    # The example works: its configuration loads, and its command line parses with it.
    name = commandline._config_name(about.example)
    (env.config_dir / command).mkdir(parents=True)
    (env.config_dir / command / f"{name}.conf").write_text(about.config)
    cfg = config.load(command, name, [], env)
    assert cfg.name == name
    argv = about.example.split()[1:]
    assert about.example.split()[0] == f"dd_{command}"
    args, _ = commandline.parse(main.parser(command), argv, env, command)
    if daemon:
        assert (args.action, args.config) == (argv[0], name)
        assert dd(command, "show", name, env=env)[0] == 0
