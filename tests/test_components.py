"""The components: dd.core.commands declares every module of dd.components, and each offers
what dd.components.Component declares, the capabilities it lacks set to None."""
import pkgutil

import pytest

from dd import components
from dd.core import commands
from dd.core.errors import ConfigError


def test_every_module_of_dd_components_is_declared():
    assert {m.name for m in pkgutil.iter_modules(components.__path__)} == set(commands.COMPONENTS)


@pytest.mark.parametrize("name", commands.COMPONENTS)
def test_a_component_offers_what_component_declares(name):
    module = components.load(name)
    assert isinstance(module, components.Component)
    assert module.NAME == name
    # A queue is chosen and consumed together, and only daemons have one or run services.
    assert (module.subscription is None) == (module.consumer is None)
    if not module.DAEMON:
        assert module.consumer is None and module.services is None


def test_loading_a_component_that_is_not_one_is_a_config_error():
    with pytest.raises(ConfigError, match="no component 'audit'"):
        components.load("audit")
