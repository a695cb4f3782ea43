"""The web console at ``/console``: server-rendered pages over the same core services as the API.

``console_router()`` is everything the app factory mounts: the sign-in pages,
the guarded pages (tasks, environments, events, executions, memories,
migration, health), the static
files (the vendored htmx, the stylesheet and a small script), and the
``template_config()`` the app renders them with. Sessions and CSRF live in
``session``; how a page, fragment or error answers lives in ``rendering``.
"""

from __future__ import annotations

from pathlib import Path

from litestar import Router
from litestar.di import Provide
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

from api.auth import provide_tenant_id
from api.console.environments import EnvironmentPagesController
from api.console.events import EventPagesController
from api.console.executions import ExecutionPagesController
from api.console.health import HealthPageController
from api.console.memories import MemoryPagesController
from api.console.migration import MigrationPagesController
from api.console.rendering import EXCEPTION_HANDLERS, SECURITY_HEADERS
from api.console.session import ConsoleSessionMiddleware, require_console_session
from api.console.signin import console_home, sign_in, sign_in_form, sign_out
from api.console.tasks import TaskBoardController

HERE = Path(__file__).parent

__all__ = ["console_router", "template_config"]


def template_config() -> TemplateConfig[JinjaTemplateEngine]:
    return TemplateConfig(directory=HERE / "templates", engine=JinjaTemplateEngine)


def console_router() -> Router:
    pages = Router(
        path="/",
        route_handlers=[
            console_home,
            TaskBoardController,
            EnvironmentPagesController,
            EventPagesController,
            ExecutionPagesController,
            MemoryPagesController,
            MigrationPagesController,
            HealthPageController,
        ],
        guards=[require_console_session],
        dependencies={"tenant_id": Provide(provide_tenant_id, sync_to_thread=False)},
    )
    static = create_static_files_router(
        path="/static", directories=[HERE / "static"], name="console-static"
    )
    return Router(
        path="/console",
        route_handlers=[sign_in_form, sign_in, sign_out, pages, static],
        middleware=[ConsoleSessionMiddleware],
        exception_handlers=EXCEPTION_HANDLERS,
        response_headers=SECURITY_HEADERS,
        include_in_schema=False,
    )
