"""The web console (dd_ctl web) on a real pump, looked at with a real browser.

The pump of test_logroute (its broker vhost and users, nginx, dd_sara ingesting ann's and
anne's files, the log router) with two subscribers, bob and eve; the console runs as
`dd_ctl web` beside them, and headless Chromium (Debian's, driven by selenium) signs in
and reads its pages as a person would.  The administrator sees every configuration in
its state, eve's backlog rising while she is stopped and falling when she starts again,
and the route of a file to both subscribers; ann, signed in with her broker password,
finds her files and not anne's; a wrong password and a page asked for without signing
in are refused.  /metrics parses with prometheus_client's parser and counts what was
delivered.  Screenshots of each page are kept in the test's directory.
"""
import base64
import datetime
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dd.pump import provenance
from tests.support.pump import wait_for
from tests.support.servers import free_port
from tests.test_logroute import Routed, conf, site, start, url  # noqa: F401 - site is a fixture

pytestmark = pytest.mark.broker
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium for the session (it takes seconds to start)."""
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("needs Debian's chromium and chromium-driver (tools/install --test)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1600,1000",
                 "--disable-gpu"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


class Console:
    """`dd_ctl web` on a free port, and a browser's view of it."""

    def __init__(self, pump, site, driver, shots):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        (site.config_dir / "web").mkdir(exist_ok=True)
        (site.config_dir / "web" / "console.conf").write_text(
            conf(web_broker=f"amqp://guest@127.0.0.1/{site.vhost}", web_port=self.port))
        self.log = pump.base / "console.log"
        with open(self.log, "w") as out:
            pump.processes.append(subprocess.Popen([sys.executable, "-m", "dd.cli.main", "ctl", "web"], env=pump.env,
                                                   stdout=subprocess.DEVNULL, stderr=out))
        self.driver, self.shots = driver, shots
        assert wait_for(lambda: "console at" in self.log.read_text(), timeout=30), self.log.read_text()

    def open(self, path, shot=None):
        self.driver.get(self.base + path)
        if shot:
            self.driver.save_screenshot(str(self.shots / f"{shot}.png"))
        return self.driver

    def text(self, path, element="main"):
        from selenium.webdriver.common.by import By
        return self.open(path).find_element(By.CSS_SELECTOR, element).text

    def sign_in(self, user, password, path="/overview"):
        from selenium.webdriver.common.by import By
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.support.ui import WebDriverWait
        self.driver.delete_all_cookies()
        driver = self.open(path)
        driver.find_element(By.ID, "user").send_keys(user)
        driver.find_element(By.ID, "password").send_keys(password)
        submit = driver.find_element(By.ID, "submit")
        submit.click()
        # The click returns before the broker has judged the password: wait for the answer's page.
        # Mid-navigation Chrome may say "Node ... does not belong to the document" instead of "stale".
        def left_the_form(_driver):
            try:
                submit.is_enabled()
            except WebDriverException:
                return True
            return False
        WebDriverWait(driver, 30).until(left_the_form)
        WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#who, #error"))
        return driver

    def state_of(self, configuration):
        from selenium.webdriver.common.by import By
        rows = self.open("/overview").find_elements(By.ID, f"row-{configuration}")
        return rows[0].find_element(By.CLASS_NAME, "state").text if rows else None

    def backlog_of(self, configuration):
        from selenium.webdriver.common.by import By
        cell = self.open("/overview").find_element(By.ID, f"row-{configuration}").find_element(
            By.CLASS_NAME, "backlog").text
        return int(cell.split()[0]) if cell.split() and cell.split()[0].isdigit() else None

    def metrics(self, user, password):
        request = urllib.request.Request(self.base + "/metrics", headers={
            "Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()})
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.read().decode()


def test_the_console_shows_the_pump_and_each_source_only_its_own_files(pump, site, browser, tmp_path):
    from selenium.webdriver.common.by import By
    n = site.names
    routed = Routed(pump, site)
    config = site.config_dir
    feeder = url(site, "pump")
    tree = pump.base / "tree"
    (config / "sara" / "anne.conf").write_text(conf(
        broker=feeder, exchange=f"xs_{n['anne']}", allowed_schemes="http file", post_broker=feeder,
        post_exchange="xpublic", post_base_url=f"file://{tree}/", directory=tree))
    (config / "subscribe" / "eve.conf").write_text(conf(broker=url(site, "eve"), allowed_schemes="file",
                                                        directory=pump.base / "eve"))
    pump.command("subscribe", "declare", "eve", check=True)
    start(pump, "sara", "anne")
    eve = start(pump, "subscribe", "eve")
    console = Console(pump, site, browser, tmp_path)

    # Signing in: no page without it, and the broker judges the password.
    assert "sign in first" in console.text("/overview")
    console.sign_in(n["ann"], "not her password")
    assert "wrong user or password" in browser.find_element(By.ID, "error").text
    assert "sign in first" in console.text("/provenance?name=a")

    routed.post("obs/a.txt", "for bob and eve")
    anne = routed.pump.src / "anne" / "c.txt"
    anne.parent.mkdir(parents=True)
    anne.write_text("anne's")
    pump.command("post", f"--post_broker={url(site, 'anne')}", f"--post_base_url={pump.base_url}",
                 f"--post_base_dir={pump.src}", anne, check=True)
    a = routed.relayed("obs/a.txt")
    assert wait_for(lambda: (pump.dst / a).exists() and (pump.base / "eve" / a).exists()
                    and (pump.dst / f"{n['anne']}/anne/c.txt").exists())
    store = provenance.Store(pump.base / "state" / provenance.DEFAULT_NAME)
    # The relay's, bob's and eve's log messages about a.txt; the relay's and two about c.txt.
    assert wait_for(lambda: len(store.search(provenance.Query(name="a.txt"))) == 3
                    and len(store.search(provenance.Query(name="c.txt"))) == 3, timeout=30), \
        store.search(provenance.Query())

    # The administrator (web_broker's user) sees every configuration in its state.
    console.sign_in("guest", "guest")
    assert browser.find_element(By.ID, "who").text == "guest (administrator)"
    configurations = ["sara/anne", "sara/ingest", "shovel/logs", "subscribe/bob", "subscribe/eve", "web/console"]
    assert wait_for(lambda: all(console.state_of(c) == "running" for c in configurations), timeout=20), \
        console.text("/overview")

    # Eve stopped: her configuration says so, and her backlog grows as ann posts.
    pump.stop(eve)
    assert console.state_of("subscribe/eve") == "stopped"
    for number in range(3):
        routed.post(f"obs/more{number}.txt", f"file {number}")
    assert wait_for(lambda: console.backlog_of("subscribe/eve") == 3, timeout=30), console.text("/overview")
    lag = console.open("/overview", "overview-eve-stopped").find_element(By.ID, "row-subscribe/eve").find_element(
        By.CLASS_NAME, "lag").text
    assert lag.endswith(" s"), lag      # the oldest of the three, peeked at through the management API
    start(pump, "subscribe", "eve")
    assert wait_for(lambda: (pump.base / "eve" / routed.relayed("obs/more2.txt")).exists())
    assert wait_for(lambda: console.backlog_of("subscribe/eve") == 0 and console.state_of("subscribe/eve")
                    == "running", timeout=30), console.text("/overview")

    # One configuration: its options without passwords, its log, its deliveries.
    page = console.text("/configuration/subscribe/bob")
    console.open("/configuration/subscribe/bob", "configuration")
    assert f"broker amqp://{n['bob']}@127.0.0.1/{site.vhost}" in page
    assert all(password not in browser.page_source for password in site.passwords.values())
    assert "201 delivered" in page and a in page

    # Where did a.txt go: found by name (as ann posted it), its route reaches the relay, bob and eve.
    console.open("/provenance?name=a.txt")
    links = browser.find_elements(By.CLASS_NAME, "file")
    assert [link.text for link in links] == ["obs/a.txt"]
    links[0].click()
    browser.save_screenshot(str(tmp_path / "file.png"))
    route = browser.find_element(By.ID, "route").text
    consumers = [e.text for e in browser.find_elements(By.CLASS_NAME, "consumer")]
    assert sorted(consumers) == sorted([n["pump"], n["bob"], n["eve"]]), route
    assert "ingested on the pump" in route and route.count("delivered to") == 2
    # The route starts when ann posted it (the notice's pubtime, carried by each log message).
    assert route.startswith(f"posted by {n['ann']} at ") and route.count("after it was posted") == 3, route
    console.open("/provenance?name=obs/*.txt", "provenance")

    # /metrics: what bob and eve delivered, counted by prometheus_client's own parser (the
    # instances write their figures every 5 s).
    def scraped():
        return {f.name: f for f in text_string_to_metric_families(console.metrics("guest", "guest"))}

    def delivered(families):
        return {s.labels["configuration"]: s.value for s in families["dd_files_delivered"].samples
                if s.labels["component"] == "subscribe" and s.name.endswith("_total")}
    on_disk = {name: float(sum(1 for p in directory.rglob("*") if p.is_file()))
               for name, directory in (("bob", pump.dst), ("eve", pump.base / "eve"))}
    assert on_disk == {"bob": 5.0, "eve": 5.0}     # a.txt, c.txt and the three more
    # Eve's counters carry over her restart: what she delivered before it and the three files
    # that waited since, as many as are on her disk.
    assert wait_for(lambda: delivered(scraped()) == on_disk, timeout=20), delivered(scraped())
    families = scraped()
    backlog = {s.labels["configuration"]: s.value for s in families["dd_queue_backlog"].samples}
    assert backlog["bob"] == 0
    with pytest.raises(urllib.error.HTTPError) as refused:
        console.metrics(n["ann"], site.passwords[n["ann"]])
    assert refused.value.code == 401
    console.open("/overview", "overview")  # by now with a minute of history in its plots

    # Ann, a source, signs in with her broker password: her files, not anne's, no overview.
    console.sign_in(n["ann"], site.passwords[n["ann"]], "/provenance")
    assert browser.find_element(By.ID, "who").text == n["ann"]
    console.open("/provenance?name=.txt", "provenance-ann")
    found = [link.text for link in browser.find_elements(By.CLASS_NAME, "file")]
    assert "obs/a.txt" in found and not any("c.txt" in name for name in found)
    anne_event = store.search(provenance.Query(name="c.txt"))[0]
    assert "no file" in console.text(f"/file/{anne_event.id}")
    assert "administrators" in console.text("/overview")
    routed.stop()


def test_the_console_refuses_to_listen_beyond_loopback_without_tls(tmp_path):
    web = tmp_path / "config" / "web"
    web.mkdir(parents=True)
    (web / "console.conf").write_text("web_host 0.0.0.0\nweb_broker amqp://guest@127.0.0.1/\n")
    result = subprocess.run([sys.executable, "-m", "dd.cli.main", "ctl", "web"], capture_output=True, text=True,
                            timeout=60, env=dict(os.environ, DD_CONFIG_DIR=str(tmp_path / "config"),
                                                 DD_STATE_DIR=str(tmp_path / "state")))
    assert result.returncode != 0
    assert result.stderr.splitlines()[-1] == ("dd_ctl: the console would listen on 0.0.0.0 without web_certificate and "
                                     "web_key (set web_certificate, web_key and web_broker, or keep web_host "
                                     "127.0.0.1)")


def test_dd_ctl_runs_the_console_as_the_configuration_web_console(tmp_path):
    web = tmp_path / "config" / "web"
    web.mkdir(parents=True)
    port = free_port()
    (web / "console.conf").write_text(f"web_port {port}\nweb_broker amqp://guest@127.0.0.1/\n")
    env = dict(os.environ, DD_CONFIG_DIR=str(tmp_path / "config"), DD_STATE_DIR=str(tmp_path / "state"),
               DD_LOG_DIR=str(tmp_path / "log"))

    def ctl(*argv):
        return subprocess.run([sys.executable, "-m", "dd.cli.main", "ctl", *argv], capture_output=True, text=True,
                              timeout=60, env=env)
    assert ctl("start").returncode == 0
    try:
        def answers():
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/overview", timeout=5)
            except urllib.error.HTTPError as error:
                return error.code == 401      # asks to sign in
            except OSError:
                return False
            return False
        assert wait_for(answers, timeout=30), (tmp_path / "log").glob("*")
        status = ctl("status")
        assert status.returncode == 0 and "web/console    running  1/1" in status.stdout, status.stdout
    finally:
        assert ctl("stop").returncode == 0
    assert ctl("status").returncode == 3
    assert not answers()
    # Started in the background, it is refused before it starts.
    (web / "console.conf").write_text("web_host 0.0.0.0\nweb_broker amqp://guest@127.0.0.1/\n")
    refused = ctl("start")
    assert refused.returncode == 2 and "would listen on 0.0.0.0" in refused.stderr
    assert not list((tmp_path / "state" / "web" / "console").glob("i*.pid"))


def test_dd_log_trace_prints_a_files_route_from_the_provenance_store(tmp_path):
    """What the log router kept, as dd_log --trace shows it on the pump."""
    from dd.core.notice import Checksum, Notice, now
    from dd.core import report
    state = tmp_path / "state"
    store = provenance.Store(state / provenance.DEFAULT_NAME)
    posted = now() - datetime.timedelta(seconds=30)
    notice = Notice(pubtime=posted, base_url="file:///tree/", rel_path="obs/a.txt", source="ann",
                    checksum=Checksum("sha512", "ab" * 64))
    relayed = Notice(pubtime=posted, base_url="http://pump/", rel_path="ann/obs/a.txt", source="ann",
                     checksum=notice.checksum)

    def made(what, user, component, code, rule=""):
        return report.of(what, code=code, message={201: "delivered", 403: "refused"}[code], rule=rule, host="h",
                         user=user, component=component, duration=0.5, nbytes=7, pubtime=now())
    store.keep([made(notice, "pump", "sara", 201), made(relayed, "bob", "subscribe", 201),
                made(relayed, "eve", "subscribe", 403, "reject")])
    store.close()
    env = dict(os.environ, DD_CONFIG_DIR=str(tmp_path / "config"), DD_STATE_DIR=str(state))

    def dd_log(*argv):
        return subprocess.run([sys.executable, "-m", "dd.cli.main", "log", *argv], capture_output=True, text=True,
                              timeout=60, env=env)
    found = dd_log("--trace", "obs/*.txt")
    assert found.returncode == 0, found.stderr
    lines = found.stdout.splitlines()
    assert lines[0] == "obs/a.txt  (source ann)"
    steps = [line.split() for line in lines[2:]]
    assert [(s[2], s[4]) for s in steps] == [("posted", "ann"), ("ingested", "pump@h/sara"),
                                             ("delivered", "bob@h/subscribe"), ("refused", "eve@h/subscribe")]
    # Seconds since ann posted the file: the posting is step 0, the rest came about 30 s later.
    assert steps[0][1] == posted.strftime("%H:%M:%S.%f")[:-3] and steps[0][3] == "0.000"
    assert all(30 <= float(s[3]) < 90 for s in steps[1:]), lines
    assert "403 refused [reject] ann/obs/a.txt" in lines[-1]
    missing = dd_log("--trace", "b.txt")
    assert missing.returncode == 1 and "no file matching 'b.txt'" in missing.stderr
