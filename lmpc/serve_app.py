"""`lmpc serve`'s HTTP API (FastAPI): one compiled program behind typed endpoints.

POST /run takes the pipeline's inputs as a JSON object and answers its outputs; POST /batch
takes {"rows": [...]}; GET /health and GET /metrics. The request and response models are
pydantic models built from the pipeline's JSON Schemas (compiler/types.to_schema), so the
OpenAPI page (/docs, /openapi.json) documents the program, and a request of the wrong shape is
a 422 naming the field before it reaches a model. Strict validation: lmpc's types do not coerce
("5" is not an int), as the runtime's own validation does not.

No `from __future__ import annotations` here: FastAPI reads the endpoints' annotations, which
name models built at run time, as objects.
"""

import asyncio
import itertools
import json
import time
from typing import Any, Literal, Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, create_model

from lmpc.runtime import redact
from lmpc.runtime.values import validation_error
from lmpc.serve_gather import Gatherer, Metrics, ServeError, prometheus

_names = itertools.count()
STOPPED = {"error": "the server stopped before this request was answered (its grace period ran out); retry"}


def field_type(schema: dict, name: str) -> Any:
    """The Python type (for pydantic) of one of lmpc's JSON Schemas; `Any` for what it cannot say."""
    if "anyOf" in schema:
        inner = [s for s in schema["anyOf"] if s.get("type") != "null"]
        return Optional[field_type(inner[0], name)] if inner else Any
    if "enum" in schema:
        return Literal[tuple(schema["enum"])]
    kind = schema.get("type")
    if kind == "array":
        return list[field_type(schema.get("items", {}), name)]
    if kind == "object":
        return object_model(f"{name}_{next(_names)}", schema.get("properties", {}), set(schema.get("required", [])))
    return {"string": str, "integer": int, "number": float, "boolean": bool}.get(kind, Any)


def object_model(name: str, properties: dict[str, dict], required: set[str],
                 descriptions: dict[str, str | None] | None = None) -> type[BaseModel]:
    """A strict pydantic model of an object's fields; each field keeps its .lmp name as its alias
    (a field may be called `json` or `model_config`, which a Python attribute may not)."""
    fields: dict[str, Any] = {}
    for i, (fname, schema) in enumerate(properties.items()):
        ftype = field_type(schema, f"{name}_{fname}")
        desc = (descriptions or {}).get(fname)
        if fname in required:
            fields[f"f{i}"] = (ftype, Field(alias=fname, title=fname, description=desc))
        else:
            fields[f"f{i}"] = (ftype, Field(None, alias=fname, title=fname, description=desc))
    config = ConfigDict(strict=True, extra="forbid", populate_by_name=False)
    return create_model(name, __config__=config, **fields)


def _required(fields: dict[str, dict]) -> set[str]:
    # an optional input (T?) may be left out: the runtime gives it null
    return {n for n, f in fields.items() if "anyOf" not in f["schema"]}


def pipeline_models(program: Any) -> tuple[type[BaseModel], type[BaseModel]]:
    """(inputs model, outputs model) of the program's pipeline."""
    title = "".join(part.capitalize() for part in program.name.split("_")) or "Pipeline"

    def model(kind: str, fields: dict[str, dict]) -> type[BaseModel]:
        m = object_model(f"{title}{kind}", {n: f["schema"] for n, f in fields.items()}, _required(fields),
                         {n: f.get("description") or f.get("type") for n, f in fields.items()})
        m.__doc__ = f"The {kind.lower()} of the pipeline `{program.name}`."
        return m

    return model("Inputs", program.input_fields), model("Outputs", program.output_fields)


class BatchInfo(BaseModel):
    id: str = Field(description="the batch the request's rows ran in (also in each trace event: extra.batch)")
    size: int = Field(description="rows in that batch (gathered from concurrent requests)")


class ErrorBody(BaseModel):
    error: str = Field(description="what went wrong, as lmpc says it")
    step: Optional[str] = Field(None, description="the step that failed")
    raw_output: Optional[str] = Field(None, description="the model's raw output, when it did not parse")
    fields: Optional[list[dict[str, Any]]] = Field(None, description="for a 422: each field and its problem")


def _where(loc: tuple) -> str:
    """A validation error's location as the request's JSON reads: `text`, `rows[3].text`."""
    parts = [p for p in loc if p != "body"]
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "the request body"


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def error_status(error: Exception) -> int:
    if isinstance(error, ServeError):
        return error.status
    # a model's answer that does not parse or fit: the upstream failed, not this server
    return 502 if getattr(error, "raw_text", None) is not None else 500


def error_body(error: Exception) -> dict[str, Any]:
    body: dict[str, Any] = {"error": redact.redact_known(str(error))}
    step = getattr(error, "step", None)
    if step:
        body["step"] = step
    raw = getattr(error, "raw_text", None)
    if raw is not None:
        body["raw_output"] = redact.redact_known(raw[:500])
    return body


def row_json(result: Any) -> dict[str, Any]:
    """A row's answer: its outputs, or its error; its trace ids and batch."""
    if isinstance(result, Exception):
        return {"outputs": None, **error_body(result), "trace_ids": [], "batch": None}
    trace = result.trace
    batch = next((e.extra["batch"] for e in trace if "batch" in e.extra), None)
    out: dict[str, Any] = {"outputs": result.values, "trace_ids": [e.trace_id for e in trace], "batch": batch}
    if result.error is not None:
        out.update(error_body(result.error))
    if result.checks:
        out["checks"] = result.checks
    return out


def build_app(program: Any, gatherer: Gatherer, metrics: Metrics, *, state: dict[str, Any], lifespan: Any = None,
              max_queue: int = 1024) -> FastAPI:
    """The app serving `program`; `state["draining"]` is set when the server is stopping (then
    /health says 503, for load balancers; requests already sent are still answered)."""
    inputs_model, outputs_model = pipeline_models(program)
    name = program.name
    declared = program.input_fields

    run_response = create_model(f"{inputs_model.__name__[:-6]}Response", outputs=(Optional[outputs_model], ...),
                                trace_ids=(list[str], ...), batch=(Optional[BatchInfo], None),
                                checks=(Optional[list[dict[str, Any]]], Field(None, description="the pipeline's checks' outcomes")))
    batch_request = create_model(f"{inputs_model.__name__[:-6]}BatchRequest", __config__=ConfigDict(extra="forbid"),
                                 rows=(list[inputs_model], Field(description="the rows to run, in order")))
    row_result = create_model(f"{inputs_model.__name__[:-6]}RowResult", __base__=run_response,
                              error=(Optional[str], None), step=(Optional[str], None), raw_output=(Optional[str], None))
    batch_response = create_model(f"{inputs_model.__name__[:-6]}BatchResponse", results=(list[row_result], ...),
                                  failed=(int, ...))

    fields_doc = ", ".join(f"{n}: {f['type']}" for n, f in declared.items())
    outs_doc = ", ".join(f"{n}: {f['type']}" for n, f in program.output_fields.items())
    app = FastAPI(title=f"lmpc: {name}", version="1", lifespan=lifespan,
                  description=f"The compiled lmpc pipeline `{name}({fields_doc}) -> ({outs_doc})`, served by "
                              "`lmpc serve`. Concurrent requests are gathered into batches.")

    def rows_of(payloads: list[BaseModel]) -> list[dict[str, Any]]:
        return [p.model_dump(by_alias=True) for p in payloads]  # an optional input left out: null

    def reject(problems: list[dict[str, Any]]) -> JSONResponse:
        metrics.rejected_request()
        first = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return JSONResponse(status_code=422, content={
            "error": f"invalid request: `{first['field']}`: {first['message']}{more}", "fields": problems})

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors():
            msg, loc = err.get("msg", "invalid"), tuple(err.get("loc", ()))
            if err.get("type") == "json_invalid":  # its loc is ("body", character offset)
                why = (err.get("ctx") or {}).get("error")
                msg = f"not valid JSON (at character {loc[-1]}{': ' + str(why) if why else ''})"
                loc = ()
            elif err.get("type") not in ("missing", "extra_forbidden") and "input" in err:
                msg += f", got {_short(err['input'])}"
            problems.append({"field": _where(loc), "message": msg, "type": err.get("type")})
        return reject(problems or [{"field": "the request body", "message": "invalid", "type": None}])

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        # a bug of ours: a JSON body that says so (uvicorn logs the traceback), never an HTML page
        return JSONResponse(status_code=500, content={"error": f"internal error: {type(exc).__name__}: {exc}"})

    def check_rows(rows: list[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
        # lmpc's own validation too: a schema pydantic could only say `Any` about
        problems = []
        for i, row in enumerate(rows):
            for fname, f in declared.items():
                if fname in row:
                    why = validation_error(row[fname], f["schema"])
                    if why is not None:
                        where = f"{prefix}[{i}].{fname}" if prefix else fname
                        problems.append({"field": where, "message": f"should be {f['type']}: {why}", "type": "lmpc"})
        return problems

    async def answer(rows: list[dict[str, Any]]) -> list[Any]:
        # Back-pressure: past max_queue rows waiting, say so at once (a client retries later)
        # rather than let every request's latency grow without bound.
        if gatherer.queued + len(rows) > max_queue:
            raise ServeError(f"the server is busy ({gatherer.queued} rows waiting); retry later", 503)
        results = await gatherer.submit(rows)
        metrics.rows_done(results)
        return results

    @app.post("/run", response_model=run_response, summary=f"Run `{name}` on one input",
              responses={422: {"model": ErrorBody, "description": "the request does not fit the pipeline's inputs"},
                         500: {"model": ErrorBody, "description": "the row failed"},
                         502: {"model": ErrorBody, "description": "the model's answer did not parse or fit"},
                         503: {"model": ErrorBody, "description": "too many rows waiting: retry later"}})
    async def run(payload: inputs_model) -> JSONResponse:  # type: ignore[valid-type]
        t0, answered = time.perf_counter(), True
        metrics.request_started()
        try:
            rows = rows_of([payload])
            problems = check_rows(rows, "")
            if problems:
                return reject(problems)
            try:
                (result,) = await answer(rows)
            except ServeError as e:
                return JSONResponse(status_code=e.status, content=error_body(e), headers={"Retry-After": "1"})
            body = row_json(result)
            error = result if isinstance(result, Exception) else result.error
            if error is not None:
                return JSONResponse(status_code=error_status(error), content=body)
            return JSONResponse(content=body)
        except asyncio.CancelledError:  # the grace period ran out: say so rather than uvicorn's bare 500
            answered = False
            return JSONResponse(status_code=503, content=STOPPED, headers={"Retry-After": "1"})
        finally:
            metrics.request_done(time.perf_counter() - t0, answered)

    @app.post("/batch", response_model=batch_response, summary=f"Run `{name}` on many inputs",
              description="Each row is answered in order; a failing row has `error` set and the others go on "
                          "(the status is 200 unless the request itself is malformed).",
              responses={422: {"model": ErrorBody, "description": "a row does not fit the pipeline's inputs"},
                         503: {"model": ErrorBody, "description": "too many rows waiting: retry later"}})
    async def batch(payload: batch_request) -> JSONResponse:  # type: ignore[valid-type]
        t0, answered = time.perf_counter(), True
        metrics.request_started()
        try:
            rows = rows_of(payload.rows)
            problems = check_rows(rows, "rows")
            if problems:
                return reject(problems)
            try:
                results = await answer(rows) if rows else []
            except ServeError as e:
                return JSONResponse(status_code=e.status, content=error_body(e), headers={"Retry-After": "1"})
            out = [row_json(r) for r in results]
            return JSONResponse(content={"results": out, "failed": sum(1 for r in out if r.get("error"))})
        except asyncio.CancelledError:  # the grace period ran out: say so rather than uvicorn's bare 500
            answered = False
            return JSONResponse(status_code=503, content=STOPPED, headers={"Retry-After": "1"})
        finally:
            metrics.request_done(time.perf_counter() - t0, answered)

    @app.get("/health", summary="Whether the server takes requests")
    async def health() -> JSONResponse:
        draining = bool(state.get("draining"))
        return JSONResponse(status_code=503 if draining else 200,
                            content={"status": "stopping" if draining else "ok", "pipeline": name,
                                     "in_flight": metrics.in_flight, "batches_running": gatherer.busy})

    @app.get("/metrics", summary="Counters and latency percentiles",
             description="JSON by default; `?format=prometheus` gives Prometheus' text format.")
    async def get_metrics(format: str = "json") -> Any:
        data = metrics.snapshot("stopping" if state.get("draining") else "serving")
        if format == "prometheus":
            return PlainTextResponse(prometheus(data), media_type="text/plain; version=0.0.4")
        return JSONResponse(content=data)

    return app
