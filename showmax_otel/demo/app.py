"""A small catalogue API written with Falcon, as services using this package are.

Routes:

- `GET /items` lists the catalogue;
- `GET /items/{item_id:int}` returns one item (404 through `HTTPNotFound`
  when the id is unknown: a handled 4xx);
- `GET /search?q=...` filters by title;
- `GET /crash/{kind}` raises an unhandled exception (a bug, as Falcon sees
  it: a 500 and a traceback).
"""

from __future__ import annotations

from typing import Any

import falcon

from showmax_otel import get_logger

CATALOGUE: dict[int, dict[str, Any]] = {
    item_id: {
        "id": item_id,
        "title": title,
        "year": year,
        "synopsis": (f"{title}: " + "a story told in many episodes. " * 28)[:900],
    }
    for item_id, (title, year) in enumerate(
        [
            ("The Wild Coast", 2019),
            ("Desert Light", 2021),
            ("River Kings", 2018),
            ("City of Gold", 2022),
            ("Night Market", 2020),
            ("Open Water", 2023),
        ],
        start=1,
    )
}


class ItemsResource:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = [
            {"id": item["id"], "title": item["title"]} for item in CATALOGUE.values()
        ]


class ItemResource:
    def __init__(self) -> None:
        self._log = get_logger("catalogue.items")

    def on_get(self, req: falcon.Request, resp: falcon.Response, item_id: int) -> None:
        self._log.info("looking up item %d", item_id)
        item = CATALOGUE.get(item_id)
        if item is None:
            raise falcon.HTTPNotFound(description=f"no item {item_id}")
        resp.media = item


class SearchResource:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        query = str(req.get_param("q") or "").lower()
        resp.media = [
            item["title"]
            for item in CATALOGUE.values()
            if query in item["title"].lower()
        ]


class CrashResource:
    def on_get(self, req: falcon.Request, resp: falcon.Response, kind: str) -> None:
        if kind == "lookup":
            raise KeyError(f"missing key in {kind}")
        raise RuntimeError(f"the catalogue backend failed ({kind})")


def create_app() -> falcon.App:
    app = falcon.App()
    app.add_route("/items", ItemsResource())
    app.add_route("/items/{item_id:int}", ItemResource())
    app.add_route("/search", SearchResource())
    app.add_route("/crash/{kind}", CrashResource())

    return app
