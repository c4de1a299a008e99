"""What runs a configuration: a component, or a service of dd_ctl's own (the web console)."""
from typing import cast

from dd import components
from dd.components import Component
from dd.core import commands


def module_of(component: str) -> Component:
    """The module that runs configurations of `component`; a service (commands.SERVICES) is
    imported only when one is run."""
    if component in commands.SERVICES:
        from dd.admin.console import service
        return cast(Component, service)
    return components.load(component)
