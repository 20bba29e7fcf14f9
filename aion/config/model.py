"""The typed, immutable model of a config set: what the daemon loads and the router decides on.

Built only from documents that passed their schemas (``build``), so every value here is already
valid; defaults documented in the schemas are applied here, in one place. Money is ``Decimal``, never
float, so budgets add up exactly.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import os
import re
from collections.abc import Iterable, Mapping
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Any


class Route(enum.StrEnum):
    LOCAL = "local"
    API = "api"
    HYBRID = "hybrid"


class Privacy(enum.StrEnum):
    LOCAL_ONLY = "local-only"
    ALLOW_API = "allow-api"
    HYBRID = "hybrid"


class Locality(enum.StrEnum):
    LOCAL = "local"
    CLOUD = "cloud"


class ApiStyle(enum.StrEnum):
    OPENAI = "openai"
    ANTHROPIC = "anthropic"


ALL_ROUTES = (Route.LOCAL, Route.API, Route.HYBRID)
DEFAULT_P95_MS = MappingProxyType({Route.LOCAL: 500, Route.API: 2000, Route.HYBRID: 2300})
DEFAULT_SECRETS_DIRECTORY = "/run/secrets/aion"
"""secrets.directory when models.yml names none, and the default of aiond's --secrets-dir."""


def _money(value: Any) -> Decimal | None:
    # repr() of a float is the shortest text that reads back as it, so 0.02 stays exactly 0.02.
    return None if value is None else Decimal(repr(value)) if isinstance(value, float) else Decimal(value)


@dataclasses.dataclass(frozen=True, slots=True)
class Intent:
    name: str
    default_route: Route | None
    """None means auto: the router chooses among the candidates."""
    candidates: tuple[Route, ...]
    privacy: Privacy
    """What intents.yml says; see :attr:`local_only` for the effective rule."""
    local_only: bool
    """True when the intent's privacy or policies' privacy.local_only_intents says so."""
    tiers_allowed: tuple[str, ...] | None
    """None means every tier."""
    vector_usage: bool
    budget_usd: Decimal | None
    fallback_order: tuple[Route, ...] | None
    description: str

    @property
    def permitted_routes(self) -> frozenset[Route]:
        """Routes its privacy allows: never api when local-only or privacy hybrid."""
        if self.local_only or self.privacy is Privacy.HYBRID:
            return frozenset({Route.LOCAL, Route.HYBRID})
        return frozenset(ALL_ROUTES)


@dataclasses.dataclass(frozen=True, slots=True)
class Budget:
    default_usd: Decimal | None
    hard_cap_usd: Decimal | None
    daily_cap_usd: Decimal | None = None
    """What all tasks together may spend in one UTC day; None: no daily cap."""


@dataclasses.dataclass(frozen=True, slots=True)
class Breakers:
    failure_ratio: float = 0.5
    window: int = 20
    min_requests: int = 5
    cooldown_ms: int = 30_000
    half_open_probes: int = 1


@dataclasses.dataclass(frozen=True, slots=True)
class Retries:
    max_attempts: int = 2
    base_delay_ms: int = 100
    max_delay_ms: int = 2000
    budget_ratio: float = 0.1


@dataclasses.dataclass(frozen=True, slots=True)
class Limits:
    concurrency: Mapping[Route, int]
    queue_depth: Mapping[Route, int]
    max_input_bytes: int


@dataclasses.dataclass(frozen=True, slots=True)
class Identity:
    issuer: str
    subject: str
    """Glob over the certificate identity; * matches any run of characters."""


@functools.lru_cache(maxsize=1024)
def glob_regex(pattern: str, *, segments: bool) -> re.Pattern[str]:
    """A glob as a regex. With ``segments``, * stays within a /-separated segment and ** crosses them;
    without, * matches anything."""
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*" if segments else ".*")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def repository_of(ref: str) -> str | None:
    """``registry/repository`` of an OCI reference (tag and digest dropped; Docker Hub names expanded
    as docker does), or None for an image-layout reference (``oci:PATH``)."""
    if ref.startswith("oci:"):
        return None
    name = ref.split("@", 1)[0]
    slash, colon = name.rfind("/"), name.rfind(":")
    if colon > slash:
        name = name[:colon]
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return name
    if not rest:
        return f"docker.io/library/{name}"
    return f"docker.io/{name}"


@dataclasses.dataclass(frozen=True, slots=True)
class TrustRule:
    match: str
    keys: tuple[str, ...]
    identities: tuple[Identity, ...]
    require_sbom: bool
    """The rule's own setting, else trust.require_sbom."""

    def matches(self, repository: str) -> bool:
        """Whether the rule applies to ``registry/repository`` (no tag or digest)."""
        return glob_regex(self.match, segments=True).fullmatch(repository) is not None


@dataclasses.dataclass(frozen=True, slots=True)
class DevException:
    registry: str
    reason: str


@dataclasses.dataclass(frozen=True, slots=True)
class Trust:
    require_sbom: bool
    rules: tuple[TrustRule, ...]
    unsafe_dev_registries: tuple[DevException, ...]
    key_roots: tuple[Path, ...] | None = None
    """Where the rules' key files must be, links followed, or None for anywhere its reader can read
    (``aionctl install``, running as its user). aiond sets its config directory and its
    ``--trust-keys-dir`` when it accepts a policy version, and installs refuse a key anywhere else;
    policies.yml cannot set it."""


def trust_key_path(key: str, config_dir: Path) -> Path | None:
    """The real path of a trust rule's key file: relative to ``config_dir``, every link followed (the
    file need not exist). None when ``key`` cannot name a file at all (a NUL in it)."""
    try:
        return Path(os.path.realpath(config_dir / key))
    except (ValueError, OSError):
        return None


def within(path: Path, roots: Iterable[Path]) -> bool:
    """Whether the real path ``path`` is inside one of ``roots`` (their links followed too)."""
    return any(path.is_relative_to(os.path.realpath(root)) for root in roots)


@dataclasses.dataclass(frozen=True, slots=True)
class Policies:
    budget: Budget
    p95_ms: Mapping[Route, int]
    local_only_intents: frozenset[str]
    allow: frozenset[str] | None
    """None means every provider."""
    deny: frozenset[str]
    fallback_order: tuple[Route, ...]
    breakers: Breakers
    retries: Retries
    limits: Limits
    trust: Trust

    def provider_allowed(self, name: str) -> bool:
        return name not in self.deny and (self.allow is None or name in self.allow)


@dataclasses.dataclass(frozen=True, slots=True)
class Provider:
    name: str
    api: ApiStyle
    base_url: str | None
    api_key_secret: str | None
    locality: Locality
    timeout_ms: int | None
    """None: twice the p95 target of the route the call serves (see :meth:`timeout_for`)."""
    builtin: bool
    """True when the values come from aion's built-in defaults (no entry in models.yml)."""

    def timeout_for(self, route_p95_ms: int) -> int:
        return self.timeout_ms if self.timeout_ms is not None else 2 * route_p95_ms


BUILTIN_PROVIDERS: Mapping[str, Provider] = MappingProxyType(
    {
        p.name: p
        for p in (
            Provider(
                "ollama", ApiStyle.OPENAI, "http://127.0.0.1:11434/v1", None, Locality.LOCAL, None, True
            ),
            Provider("vllm", ApiStyle.OPENAI, "http://127.0.0.1:8000/v1", None, Locality.LOCAL, None, True),
            Provider(
                "llamacpp", ApiStyle.OPENAI, "http://127.0.0.1:8080/v1", None, Locality.LOCAL, None, True
            ),
            Provider(
                "openai",
                ApiStyle.OPENAI,
                "https://api.openai.com/v1",
                "OPENAI_API_KEY",
                Locality.CLOUD,
                None,
                True,
            ),
            Provider("azure", ApiStyle.OPENAI, None, "AZURE_OPENAI_API_KEY", Locality.CLOUD, None, True),
            Provider(
                "hf",
                ApiStyle.OPENAI,
                "https://router.huggingface.co/v1",
                "HF_TOKEN",
                Locality.CLOUD,
                None,
                True,
            ),
            Provider(
                "anthropic",
                ApiStyle.ANTHROPIC,
                "https://api.anthropic.com",
                "ANTHROPIC_API_KEY",
                Locality.CLOUD,
                None,
                True,
            ),
        )
    }
)


@dataclasses.dataclass(frozen=True, slots=True, order=True)
class ModelRef:
    provider: str
    model: str

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        provider, _, model = text.partition(":")
        return cls(provider, model)

    def __str__(self) -> str:
        return f"{self.provider}:{self.model}"


@dataclasses.dataclass(frozen=True, slots=True)
class ModelInfo:
    ref: ModelRef
    input_usd_per_mtok: Decimal
    output_usd_per_mtok: Decimal
    price_known: bool
    """False when the prices are the pricing defaults (a cloud model with no price in models.yml)."""
    context_window: int
    max_output_tokens: int


@dataclasses.dataclass(frozen=True, slots=True)
class Tier:
    name: str
    local: tuple[ModelRef, ...]
    cloud: tuple[ModelRef, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Models:
    tiers: Mapping[str, Tier]
    providers: Mapping[str, Provider]
    """Every provider models.yml configures, plus the built-in ones it refers to."""
    models: Mapping[str, ModelInfo]
    """Every model a tier lists, by "provider:model", with prices and limits (defaults applied)."""
    secrets_backend: str
    secrets_directory: str | None
    """secrets.directory as models.yml names it; None when it names none (then
    :data:`DEFAULT_SECRETS_DIRECTORY`). aiond never reads it: its keys come from its --secrets-dir."""

    def provider(self, name: str) -> Provider | None:
        return self.providers.get(name) or BUILTIN_PROVIDERS.get(name)


@dataclasses.dataclass(frozen=True, slots=True)
class Module:
    name: str
    ref: str
    runtime: str
    signatures: tuple[str, ...]
    timeout_ms: int
    cpu: str
    memory: str
    intents: frozenset[str] | None
    """None when modules.yml does not say; the module's manifest does."""
    routes: frozenset[Route]
    parallelism: int
    queue_depth: int = 4
    fuel: int | None = None
    cost_usd_per_call: Decimal = Decimal(0)

    def may_serve(self, intent: str, route: Route) -> bool:
        return route in self.routes and (self.intents is None or intent in self.intents)


@dataclasses.dataclass(frozen=True, slots=True)
class ConfigSnapshot:
    """A whole config set, immutable. ``tag`` is the content hash of the files it was built from."""

    intents: Mapping[str, Intent]
    policies: Policies
    models: Models
    modules: Mapping[str, Module]
    tag: str


def build_policies(doc: Mapping[str, Any] | None) -> Policies:
    d: Mapping[str, Any] = doc or {}
    budget = d.get("budget", {})
    cap = _money(budget.get("hard_cap_usd"))
    p95 = d.get("latency", {}).get("p95_ms", {})
    providers = d.get("providers", {})
    breakers = d.get("breakers", {})
    retries = d.get("retries", {})
    limits = d.get("limits", {})
    trust = d.get("trust", {})
    require_sbom = bool(trust.get("require_sbom", False))
    return Policies(
        budget=Budget(
            default_usd=_money(budget.get("default_usd", budget.get("hard_cap_usd"))),
            hard_cap_usd=cap,
            daily_cap_usd=_money(budget.get("daily_cap_usd")),
        ),
        p95_ms=MappingProxyType({r: int(p95.get(r.value, DEFAULT_P95_MS[r])) for r in ALL_ROUTES}),
        local_only_intents=frozenset(d.get("privacy", {}).get("local_only_intents", ())),
        allow=frozenset(providers["allow"]) if "allow" in providers else None,
        deny=frozenset(providers.get("deny", ())),
        fallback_order=tuple(Route(r) for r in d.get("routing", {}).get("fallback_order", ALL_ROUTES)),
        breakers=_known(Breakers, breakers),
        retries=_known(Retries, retries),
        limits=Limits(
            concurrency=_per_route(
                limits.get("concurrency"), {Route.LOCAL: 16, Route.API: 64, Route.HYBRID: 16}
            ),
            queue_depth=_per_route(
                limits.get("queue_depth"), {Route.LOCAL: 64, Route.API: 256, Route.HYBRID: 64}
            ),
            max_input_bytes=int(limits.get("max_input_bytes", 1024 * 1024)),
        ),
        trust=Trust(
            require_sbom=require_sbom,
            rules=tuple(
                TrustRule(
                    match=rule["match"],
                    keys=tuple(rule.get("keys", ())),
                    identities=tuple(Identity(i["issuer"], i["subject"]) for i in rule.get("identities", ())),
                    require_sbom=bool(rule.get("require_sbom", require_sbom)),
                )
                for rule in trust.get("rules", ())
            ),
            unsafe_dev_registries=tuple(
                DevException(e["registry"], e["reason"]) for e in trust.get("unsafe_dev_registries", ())
            ),
        ),
    )


def _known(cls: Any, values: Mapping[str, Any]) -> Any:
    """``cls`` built from the keys it defines; unknown keys (reported by AION101) are left out."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names})


def _per_route(values: Mapping[str, Any] | None, defaults: Mapping[Route, int]) -> Mapping[Route, int]:
    given = values or {}
    return MappingProxyType({r: int(given.get(r.value, defaults[r])) for r in ALL_ROUTES})


def build_intents(doc: Mapping[str, Any] | None, policies: Policies) -> Mapping[str, Intent]:
    intents: dict[str, Intent] = {}
    for name, spec in (doc or {}).items():
        if name in ("apiVersion", "kind"):
            continue
        privacy = Privacy(spec.get("privacy", Privacy.ALLOW_API.value))
        default = spec.get("default_route", "auto")
        fallback = spec.get("fallback_order")
        tiers = spec.get("tiers_allowed")
        intents[name] = Intent(
            name=name,
            default_route=None if default == "auto" else Route(default),
            candidates=tuple(Route(r) for r in spec.get("candidates", [r.value for r in ALL_ROUTES])),
            privacy=privacy,
            local_only=privacy is Privacy.LOCAL_ONLY or name in policies.local_only_intents,
            tiers_allowed=None if tiers is None else tuple(tiers),
            vector_usage=bool(spec.get("vector_usage", False)),
            budget_usd=_money(spec.get("budget_usd")),
            fallback_order=None if fallback is None else tuple(Route(r) for r in fallback),
            description=str(spec.get("description", "")),
        )
    return MappingProxyType(intents)


def build_models(doc: Mapping[str, Any] | None) -> Models:
    d: Mapping[str, Any] = doc or {}
    providers: dict[str, Provider] = {}
    for name, spec in d.get("providers", {}).items():
        base = BUILTIN_PROVIDERS.get(name)
        providers[name] = Provider(
            name=name,
            api=ApiStyle(spec.get("api", base.api.value if base else ApiStyle.OPENAI.value)),
            base_url=spec.get("base_url", base.base_url if base else None),
            api_key_secret=spec.get("api_key_secret", base.api_key_secret if base else None),
            locality=Locality(spec.get("locality", base.locality.value if base else Locality.CLOUD.value)),
            timeout_ms=spec.get("timeout_ms"),
            builtin=False,
        )
    tiers: dict[str, Tier] = {}
    for name, spec in d.get("tiers", {}).items():
        tiers[name] = Tier(
            name=name,
            local=tuple(ModelRef.parse(r) for r in spec.get("local", ())),
            cloud=tuple(ModelRef.parse(r) for r in spec.get("cloud", ())),
        )
    for tier in tiers.values():
        for ref in (*tier.local, *tier.cloud):
            if ref.provider not in providers and ref.provider in BUILTIN_PROVIDERS:
                providers[ref.provider] = BUILTIN_PROVIDERS[ref.provider]
    pricing = d.get("pricing", {})
    default_in = _money(pricing.get("default_input_usd_per_mtok", 10)) or Decimal(0)
    default_out = _money(pricing.get("default_output_usd_per_mtok", 30)) or Decimal(0)
    # (or Decimal(0): only to satisfy the type; the values above are never None)
    facts = d.get("models", {})
    models: dict[str, ModelInfo] = {}
    for tier in tiers.values():
        for ref in (*tier.local, *tier.cloud):
            # Free when the provider runs on this host, whichever list the model sits in.
            provider = providers.get(ref.provider) or BUILTIN_PROVIDERS.get(ref.provider)
            local = provider is not None and provider.locality is Locality.LOCAL
            spec = facts.get(str(ref), {})
            price_in, price_out = (
                _money(spec.get("input_usd_per_mtok")),
                _money(spec.get("output_usd_per_mtok")),
            )
            models[str(ref)] = ModelInfo(
                ref=ref,
                input_usd_per_mtok=price_in if price_in is not None else Decimal(0) if local else default_in,
                output_usd_per_mtok=price_out
                if price_out is not None
                else Decimal(0)
                if local
                else default_out,
                price_known=local or (price_in is not None and price_out is not None),
                context_window=int(spec.get("context_window", 8192)),
                max_output_tokens=int(spec.get("max_output_tokens", 1024)),
            )
    secrets = d.get("secrets", {})
    return Models(
        tiers=MappingProxyType(tiers),
        providers=MappingProxyType(providers),
        models=MappingProxyType(models),
        secrets_backend=str(secrets.get("backend", "files")),
        secrets_directory=str(secrets["directory"]) if "directory" in secrets else None,
    )


def build_modules(doc: Mapping[str, Any] | None) -> Mapping[str, Module]:
    modules: dict[str, Module] = {}
    for spec in (doc or {}).get("modules", ()):
        limits = spec.get("limits", {})
        intents = spec.get("intents")
        modules.setdefault(
            spec["name"],
            Module(
                name=spec["name"],
                ref=spec["ref"],
                runtime=spec.get("runtime", "wasm"),
                signatures=tuple(spec.get("signatures", ())),
                timeout_ms=int(spec.get("timeout_ms", 1000)),
                cpu=str(limits.get("cpu", "1")),
                memory=str(limits.get("memory", "256Mi")),
                intents=None if intents is None else frozenset(intents),
                routes=frozenset(Route(r) for r in spec.get("routes", ["hybrid"])),
                parallelism=int(spec.get("parallelism", 1)),
                queue_depth=int(spec.get("queue_depth", 4 * int(spec.get("parallelism", 1)))),
                fuel=int(limits["fuel"]) if "fuel" in limits else None,
                cost_usd_per_call=_money(spec.get("cost_usd_per_call")) or Decimal(0),
            ),
        )
    return MappingProxyType(modules)


__all__ = [
    "ALL_ROUTES",
    "BUILTIN_PROVIDERS",
    "DEFAULT_P95_MS",
    "DEFAULT_SECRETS_DIRECTORY",
    "ApiStyle",
    "Breakers",
    "Budget",
    "ConfigSnapshot",
    "DevException",
    "Identity",
    "Intent",
    "Limits",
    "Locality",
    "ModelInfo",
    "ModelRef",
    "Models",
    "Module",
    "Policies",
    "Privacy",
    "Provider",
    "Retries",
    "Route",
    "Tier",
    "Trust",
    "TrustRule",
    "build_intents",
    "build_models",
    "build_modules",
    "build_policies",
    "glob_regex",
    "repository_of",
    "trust_key_path",
    "within",
]
