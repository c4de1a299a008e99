"""Packaging metadata for dd (distribution name: metpx-dd; commands dd_*)."""
import re
import runpy
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
__version__ = re.search(r'__version__ = "([^"]+)"', (HERE / "dd" / "__init__.py").read_text()).group(1)

# Declared once, in dd/core/commands.py: run on its own, as dd's dependencies may not be installed yet.
COMMANDS = runpy.run_path(str(HERE / "dd" / "core" / "commands.py"))["COMMANDS"]

setup(
    name="metpx-dd",
    version=__version__,
    description="Data distribution over AMQP notices: post, watch, subscribe, pump",
    long_description=(HERE / "README.rst").read_text(encoding="utf-8"),
    long_description_content_type="text/x-rst",
    license="GPL-2.0-or-later",
    python_requires=">=3.9",
    packages=find_packages(include=["dd", "dd.*"]),
    install_requires=[
        "amqp>=5.1.1",
        "paramiko>=2.12.0",
        "watchdog>=2.2.1",
        "xxhash>=3.2.0",
        "platformdirs>=2.6.0",
        "humanize>=4.4.0",
        "urllib3>=1.26.12",
        "bcrypt>=3.2.2",
        "redis>=4.3.4",      # nodupe_store and rate_store of a pump on several nodes
        "tqdm>=4.64.1",
        # The web console (dd_ctl web): Flask pages served by cheroot, which speaks TLS (waitress does not).
        "flask>=2.2.2",
        "cheroot>=9.0.0",
        "prometheus_client>=0.16.0",
    ],
    # The console's page templates and the files its pages load.
    package_data={"dd.admin.console": ["templates/*.html", "static/*"]},
    # mypy 2 no longer checks code for Python 3.9 (pyproject.toml's python_version).
    extras_require={"test": ["pytest>=7.2", "pytest-xdist>=3.1", "hypothesis>=6.85", "build>=0.10", "twine>=4.0",
                             "docutils>=0.19", "packaging>=23.0", "ruff>=0.6", "mypy>=1.19,<2", "types-paramiko>=4.0",
                             # The FTP server of the transfer tests, and what its FTPS needs.
                             "pyftpdlib>=1.5.7", "pyOpenSSL>=23.0.0",
                             # test_console drives Debian's chromium and chromedriver.
                             "selenium>=4.8",
                             # MQTT over WebSockets: the tests' bridge to Mosquitto, and paho for MQTT.
                             "websockets>=10.4", "paho-mqtt>=2.1",
                             # The WIS2 peer (its message validator and downloader) and the WNM schema's.
                             "pywis-pubsub>=0.12", "jsonschema>=4.10"],
                    "bench": ["psutil>=5.9.4", "metpx-sr3>=3.0"],
                    # MQTT brokers (mqtt://, mqtts://, ws://, wss://): Debian 12 ships paho-mqtt 1.6 only.
                    "mqtt": ["paho-mqtt>=2.1"]},
    entry_points={
        "console_scripts": [f"dd_{c} = dd.cli.main:{c}" for c in COMMANDS],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Operating System :: POSIX :: Linux",
        "Topic :: System :: Networking",
    ],
)
