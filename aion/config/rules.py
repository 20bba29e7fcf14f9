"""The catalogue of validation rules: a stable id, a default severity, a one-line summary and the
documentation ``aionctl explain RULE`` prints.

Ids never change meaning and are never reused. Ranges: AION0xx reading files, AION1xx schemas,
AION2xx references between files, AION3xx privacy, AION4xx budgets, latency and reachability,
AION5xx the Kafka file (kafka.yml), AION6xx runbooks.
"""

from __future__ import annotations

import dataclasses
import textwrap

from aion.config.findings import Severity


@dataclasses.dataclass(frozen=True, slots=True)
class Rule:
    id: str
    name: str
    severity: Severity
    summary: str
    doc: str

    def explain(self) -> str:
        body = textwrap.dedent(self.doc).strip()
        return f"{self.id} {self.name} ({self.severity.value})\n\n{self.summary}\n\n{body}\n"


_E, _W, _I = Severity.ERROR, Severity.WARNING, Severity.INFO

_RULES = (
    # -- reading files -----------------------------------------------------------------------------
    Rule(
        "AION001",
        "yaml-syntax",
        _E,
        "The file is not valid YAML.",
        """
        The YAML parser stopped at the position given. Nothing else in the file is checked until it
        parses. Common causes: a tab used for indentation, an unclosed quote or bracket, a key
        without a colon, a line indented deeper or shallower than its siblings.
        """,
    ),
    Rule(
        "AION002",
        "encoding",
        _E,
        "The file is not UTF-8 text.",
        """
        aion reads config as UTF-8 (a UTF-8 byte-order mark is allowed). The position is the first
        byte that is not UTF-8. Fix: save the file as UTF-8, for example with
        `iconv -f LATIN1 -t UTF-8 in.yml > out.yml`.
        """,
    ),
    Rule(
        "AION003",
        "limit",
        _E,
        "The file exceeds a size or nesting limit.",
        """
        Files larger than the size limit (16 MiB unless --max-file-size says otherwise) are not
        read, and nesting deeper than 100 levels is refused: config that large or that deep is a
        mistake or an attack. Split the file, or flatten the structure.
        """,
    ),
    Rule(
        "AION004",
        "duplicate-key",
        _E,
        "A mapping has the same key twice.",
        """
        YAML loaders keep only one of the two values, silently, so one of them never takes effect.
        The finding points at the second occurrence and names the line of the first. Remove one,
        or merge them. (YAML merge keys, `<<: *anchor`, are not duplicates: explicit keys override
        merged ones.)
        """,
    ),
    Rule(
        "AION005",
        "alias-limit",
        _E,
        "YAML aliases expand beyond the limit, or refer to themselves.",
        """
        Anchors and aliases (&name, *name) let one node appear many times; nested aliases can
        expand a small file into billions of nodes (the "billion laughs" attack). aion stops when
        the expanded document would exceed the node limit, or when an alias refers to a node that
        contains it. Write the repeated parts out, or use fewer levels of aliases.
        """,
    ),
    Rule(
        "AION006",
        "multiple-documents",
        _E,
        "The file holds more than one YAML document.",
        """
        Each config file holds one document; a second `---` starts another, which would be ignored.
        Put each document in its own file.
        """,
    ),
    Rule(
        "AION007",
        "unsupported-yaml",
        _E,
        "The file uses YAML that aion does not accept.",
        """
        Refused: custom tags (for example !!python/object or !Ref), binary values, and mapping
        keys that are not plain scalars (lists or mappings as keys, aliases as keys). Config must
        mean the same to every tool that reads it; write plain values instead.
        """,
    ),
    Rule(
        "AION008",
        "unknown-file",
        _W,
        "A file is not recognised as an aion config file.",
        """
        In a directory, aion recognises intents.yml, policies.yml, models.yml and modules.yml
        (.yaml too), and any YAML file whose top-level `kind:` is Intents, Policies, Models,
        Modules, AgentPackage or Runbook. Other YAML files are ignored, with this warning so that a
        misnamed file (intent.yml) does not go unnoticed. Rename it, add `kind:`, or pass --kind.
        """,
    ),
    Rule(
        "AION009",
        "duplicate-kind",
        _E,
        "Two files of the set define the same kind.",
        """
        A config set has one file of each kind (one intents file, one policies file, ...); with two,
        it is not clear which one the daemon would use. Merge them, or validate them as separate sets.
        """,
    ),
    Rule(
        "AION010",
        "incomplete-set",
        _I,
        "The set lacks a file kind; checks that need it were skipped.",
        """
        Cross-file checks (tiers named by intents, providers named by policies, ...) need the files
        they compare. When a kind is missing they are skipped, and this note says which. Validate
        the whole config directory to run every check.
        """,
    ),
    Rule(
        "AION011",
        "unknown-kind",
        _E,
        "A file declares a kind: that aion does not know.",
        """
        A top-level `kind:` says the file is meant for aion, but the value is none of Intents,
        Policies, Models, Modules, AgentPackage or Runbook (matched without regard to case), so the
        file could not be checked at all. Fix the value; the hint suggests the closest kind.
        """,
    ),
    Rule(
        "AION012",
        "not-a-file",
        _E,
        "A config entry is not a regular file (a FIFO, socket or device).",
        """
        Only regular files are read. A FIFO, socket or device named like a config file is never
        opened for reading: reading it could wait forever for a writer (a FIFO) or never end
        (/dev/zero), which would hang a CI job or a daemon reload. It is an error because the set
        it belongs to cannot be checked whole. Replace it with the regular file it stands for, or
        remove it. (A path named on the command line that is not a regular file is refused with
        exit 3 instead; to validate what a pipe carries, pass - and pipe it to standard input.)
        """,
    ),
    # -- schemas ---------------------------------------------------------------------------------
    Rule(
        "AION100",
        "schema",
        _E,
        "A value does not match the schema of its file kind.",
        """
        Each file kind has a JSON Schema (`aionctl schema show config/intents`, ...) that says which
        keys exist, their types and allowed values. The message says what was expected at the
        position given.
        """,
    ),
    Rule(
        "AION101",
        "unknown-key",
        _W,
        "A key that the file kind does not define.",
        """
        The key would be ignored, so whatever it was meant to set does not take effect: often a
        typo (`candidate` for `candidates`) or a key at the wrong level. It is a warning by default
        and an error with --strict.
        """,
    ),
    # -- references between files ----------------------------------------------------------------
    Rule(
        "AION201",
        "unknown-tier",
        _E,
        "An intent allows a tier that models.yml does not define.",
        """
        tiers_allowed names tiers from models.yml; a name that is not there matches no model, so
        the intent has fewer models than it seems. Fix the name, or define the tier.
        """,
    ),
    Rule(
        "AION202",
        "unknown-intent",
        _E,
        "A setting names an intent that intents.yml does not define.",
        """
        privacy.local_only_intents and a module's intents name intents from intents.yml. A name
        that is not there protects or serves nothing - a privacy rule that silently does nothing is
        the dangerous case. Fix the name, or define the intent.
        """,
    ),
    Rule(
        "AION203",
        "unknown-provider",
        _E,
        "A provider is neither configured nor built in.",
        """
        Models (provider:model) and providers.allow/deny name providers. A provider must have an
        entry under providers: in models.yml, or be one aion knows (ollama, vllm, llamacpp, openai,
        azure, hf, anthropic). Without one, aion cannot reach it, and an allow or deny entry for it
        does nothing.
        """,
    ),
    Rule(
        "AION204",
        "duplicate-module",
        _E,
        "Two modules have the same name.",
        """
        Module names identify modules in the store, in the router and in aionctl; two entries with
        one name cannot both be installed. Rename or remove one.
        """,
    ),
    Rule(
        "AION205",
        "missing-key-file",
        _E,
        "A trust rule names a public key file that does not exist.",
        """
        Paths under trust.rules[].keys are relative to the config directory. A key that cannot be
        read verifies nothing, so every module that rule matches would be refused. Fix the path,
        or add the key.
        """,
    ),
    Rule(
        "AION206",
        "manifest-module-unlisted",
        _W,
        "A module manifest names a module modules.yml does not list.",
        """
        An AgentPackage manifest validated with the set has a metadata.name that modules.yml does
        not list, so the platform does not expect that module; often a renamed module. List it in
        modules.yml, or fix the name.
        """,
    ),
    Rule(
        "AION207",
        "manifest-runtime-mismatch",
        _E,
        "A module manifest and modules.yml disagree about the runtime.",
        """
        modules.yml says the module runs as wasm (or subprocess) and its AgentPackage manifest says
        otherwise; the module could not be started as configured. Make them agree.
        """,
    ),
    Rule(
        "AION208",
        "trust-key-outside-set",
        _W,
        "A trust rule's key file is outside the config set's directory.",
        """
        The path under trust.rules[].keys is absolute, or climbs out with '..', or leads out
        through a symbolic link. aionctl validate cannot know where the daemon keeps keys, so
        here it is a warning. aiond treats it as an error: it reads a key only inside its config
        directory (--config) or its key directory (--trust-keys-dir), whatever a config set says,
        so that an uploaded set cannot make it read any file of the host. There the set is
        refused, and a module signed by such a key is never installed. Copy the key into the
        config directory and name it relatively (keys/team.pub), or put it in aiond's
        --trust-keys-dir and name it by its absolute path there.
        """,
    ),
    Rule(
        "AION209",
        "secrets-directory-ignored",
        _I,
        "models.yml names a secrets.directory that aiond does not read.",
        """
        aiond reads API keys only from its own --secrets-dir (AIOND_SECRETS_DIR, default
        /run/secrets/aion), fixed when it starts, so that an uploaded config set cannot make it
        read any file of the host and send it to a provider. secrets.directory is still valid for
        other tools that read the set. aionctl validate notes a directory other than the default;
        aiond warns, naming both, when it differs from its --secrets-dir. Put the secret files in
        aiond's --secrets-dir, or remove secrets.directory.
        """,
    ),
    # -- privacy ---------------------------------------------------------------------------------
    Rule(
        "AION301",
        "local-only-leak",
        _E,
        "A local-only intent can take a route that leaves the host.",
        """
        An intent is local-only when its privacy says so or privacy.local_only_intents lists it.
        Its data must never leave the host, so the api route (a remote model) cannot be among its
        candidates, its default route or its fallback order. The hybrid route is allowed: under
        local-only privacy its model step uses local models only. Remove api, or change the
        intent's privacy if it may really leave the host.
        """,
    ),
    Rule(
        "AION302",
        "local-only-cloud-tier",
        _E,
        "A local-only intent allows a tier with only cloud models.",
        """
        A local-only intent may only use local models; a tier that has no local models gives it
        nothing, and suggests the intent was meant to reach those cloud models. Remove the tier
        from tiers_allowed, or add local models to it.
        """,
    ),
    Rule(
        "AION303",
        "hybrid-privacy-api",
        _E,
        "An intent with hybrid privacy can take the direct api route.",
        """
        privacy: hybrid means data leaves the host only after a module's local step (redaction,
        extraction). The api route sends the raw input to a remote model, skipping that step.
        Remove api from candidates, default_route and fallback_order, or use privacy: allow-api.
        """,
    ),
    Rule(
        "AION304",
        "cloud-model-listed-local",
        _E,
        "A tier lists a cloud provider's model as local.",
        """
        Models under a tier's local: list are treated as staying on the host, and local-only
        intents may use them. A model of a cloud provider there would leak their data. Move it to
        cloud:, or mark the provider locality: local if it really runs on this host.
        """,
    ),
    Rule(
        "AION305",
        "local-model-listed-cloud",
        _W,
        "A tier lists a local provider's model as cloud.",
        """
        The model runs on this host but is listed under cloud:, so local-only intents will never use
        it. Move it to local:, or set the provider's locality to cloud if it is remote.
        """,
    ),
    Rule(
        "AION306",
        "privacy-override",
        _I,
        "privacy.local_only_intents overrides an intent's own privacy.",
        """
        The intent says allow-api or hybrid, but policies.yml makes it local-only; the policy wins.
        This note makes the override visible; set the intent's privacy to local-only to silence it.
        """,
    ),
    # -- budgets, latency, reachability ----------------------------------------------------------
    Rule(
        "AION401",
        "unservable-intent",
        _E,
        "No allowed, non-denied model or module can serve the intent.",
        """
        For every route the intent may take (its candidates, within its privacy), aion looked for a
        model in its allowed tiers whose provider is allowed and not denied, or a module that serves
        it. None exists, so every task of this intent would be refused. Allow a tier or provider,
        or add a model or module.
        """,
    ),
    Rule(
        "AION402",
        "default-route-unreachable",
        _W,
        "The intent's default route can never be taken.",
        """
        default_route names a route that is not among the candidates, that its privacy excludes, or
        that nothing can serve; the router falls back to another route every time. Fix the default,
        or the candidates.
        """,
    ),
    Rule(
        "AION403",
        "budget-default-above-cap",
        _E,
        "budget.default_usd is above budget.hard_cap_usd.",
        """
        The hard cap always wins, so the default can never be spent; the default was probably meant
        to be lower, or the cap higher.
        """,
    ),
    Rule(
        "AION404",
        "intent-budget-above-cap",
        _E,
        "An intent's budget_usd is above budget.hard_cap_usd.",
        """
        The hard cap always wins, so the intent's budget can never be reached. Lower it, or raise
        the cap.
        """,
    ),
    Rule(
        "AION405",
        "module-timeout-above-p95",
        _W,
        "A module's timeout is above the p95 latency target of a route that uses it.",
        """
        A module that may take longer than the route's p95 target can make the route miss its
        target on its own. Lower timeout_ms, raise latency.p95_ms for the route, or restrict the
        module's routes.
        """,
    ),
    Rule(
        "AION406",
        "fallback-unreachable",
        _E,
        "An intent's fallback_order names a route the intent cannot take.",
        """
        Every entry of an intent's own fallback_order must be a route it can take (among its
        candidates and allowed by its privacy); otherwise the fallback never happens when it is
        needed. Remove the entry, or add the route to the candidates.
        """,
    ),
    Rule(
        "AION407",
        "provider-unused",
        _I,
        "providers.allow names a provider that no model uses.",
        """
        The entry allows nothing. Harmless, but it may be a typo of a provider that is then not
        allowed at all.
        """,
    ),
    Rule(
        "AION408",
        "provider-allowed-and-denied",
        _W,
        "A provider is both allowed and denied.",
        """
        deny always wins, so the allow entry does nothing. Remove one of the two.
        """,
    ),
    Rule(
        "AION409",
        "tier-unused",
        _I,
        "No intent allows the tier.",
        """
        Its models are never used. Harmless; allow the tier in an intent's tiers_allowed, or remove it.
        """,
    ),
    Rule(
        "AION410",
        "candidate-unreachable",
        _W,
        "A candidate route can never be taken for the intent.",
        """
        The route is among the candidates, but nothing can serve it within the intent's privacy,
        tiers and the provider allow/deny lists (for example api with no allowed cloud model), so
        it is never chosen and never a fallback. Remove it, or make a model or module available.
        """,
    ),
    Rule(
        "AION411",
        "fallback-route-unused",
        _I,
        "routing.fallback_order names a route no intent can take.",
        """
        The entry never applies. Harmless; remove it, or it may be a sign that an intent lost
        access to that route.
        """,
    ),
    Rule(
        "AION412",
        "model-unusable",
        _W,
        "A model's provider is denied or not allowed, so the model is never used.",
        """
        The model is listed in a tier, but providers.deny (or the absence from providers.allow)
        excludes its provider. Remove the model, or allow the provider.
        """,
    ),
    Rule(
        "AION413",
        "trust-rule-empty",
        _E,
        "A trust rule has neither keys nor identities.",
        """
        Such a rule matches modules but can verify none of them, so every module it matches is
        refused. Add the keys or identities that sign those modules.
        """,
    ),
    Rule(
        "AION414",
        "trust-rule-shadowed",
        _W,
        "A trust rule can never apply: an earlier rule matches everything it matches.",
        """
        Trust rules are tried in order and the first match applies. Move the narrower rule first,
        or remove it.
        """,
    ),
    Rule(
        "AION416",
        "module-untrusted",
        _W,
        "A module's registry and repository match no trust rule.",
        """
        Module verification fails closed: a module whose registry/repository matches no rule in
        trust.rules, and whose registry is no named development exception, is never installed. Add
        a trust rule that covers it, or fix its ref.
        """,
    ),
    Rule(
        "AION417",
        "provider-no-endpoint",
        _I,
        "A provider that models use has no base_url.",
        """
        aion knows no default endpoint for this provider (azure endpoints are per deployment), so its
        models cannot be called until providers.NAME.base_url is set in models.yml. Validation and
        routing still work; execution of those models fails.
        """,
    ),
    Rule(
        "AION415",
        "no-trust-policy",
        _I,
        "Modules are listed but no trust rule exists; installing them will be refused.",
        """
        Module verification fails closed: a module whose reference matches no trust rule (and no
        named development exception) is never installed. Add trust.rules to policies.yml for the
        registries your modules come from.
        """,
    ),
    # -- the Kafka file ----------------------------------------------------------------------------
    Rule(
        "AION501",
        "kafka-broker-address",
        _E,
        "A bootstrap server is not HOST:PORT.",
        """
        kafka.bootstrap_servers lists the brokers a client connects to first, each as HOST:PORT (a
        host name or IPv4 address) or [IPV6]:PORT, with a port from 1 to 65535 and no scheme:
        `kafka-1.internal:9093`, not `kafka://kafka-1.internal:9093`.
        """,
    ),
    Rule(
        "AION502",
        "kafka-out-of-range",
        _E,
        "A retention or the outbox size is outside its range.",
        """
        A topic's retention is a number and a unit (ms, s, m, h, d, w) from 1m to 3650d, or
        `forever`; it becomes the topic's retention.ms. kafka.delivery.outbox_max_bytes is a size
        (bytes, or with Ki, Mi or Gi) from 1Mi to 16Gi: the most aiond's local outbox holds of
        events Kafka has not acknowledged.
        """,
    ),
    Rule(
        "AION503",
        "kafka-security",
        _E,
        "The security settings do not fit the protocol.",
        """
        SASL_SSL and SASL_PLAINTEXT authenticate with SCRAM and need security.sasl (username and
        password_secret); PLAINTEXT and SSL do not use it, so a sasl section there would be ignored,
        and so would a tls section with PLAINTEXT or SASL_PLAINTEXT. A client certificate
        (tls.cert_file) needs its key (tls.key_file), and the other way round; a key passphrase
        (tls.key_password_secret) needs the key. The default protocol is SASL_SSL.
        """,
    ),
    Rule(
        "AION504",
        "kafka-unauthenticated",
        _W,
        "Connections to Kafka would not be authenticated (or not encrypted).",
        """
        With PLAINTEXT nothing is encrypted and the brokers cannot tell aiond from anyone else; with
        SSL and no client certificate the connection is encrypted, but aiond is User:ANONYMOUS to the
        brokers, so ACLs cannot grant it anything of its own. Use SASL_SSL with a SCRAM user, or SSL
        with tls.cert_file and tls.key_file (mTLS). Fine for a development broker.
        """,
    ),
    Rule(
        "AION505",
        "kafka-topic-collision",
        _E,
        "Two topic roles have the same topic, or names Kafka confuses.",
        """
        Each of the roles decisions, lifecycle, metrics and audit needs a topic of its own: consumers
        of the audit record must not read task events, and retention differs by role. Kafka also
        writes '.' as '_' in its metric names, so `aion.audit` and `aion_audit` collide there.
        """,
    ),
    Rule(
        "AION506",
        "kafka-topic-config",
        _E,
        "A topic config that aion sets otherwise, or that no write could satisfy.",
        """
        retention.ms is set with the topic's `retention:` (14d, 36h, forever), not in configs.
        min.insync.replicas must be a number no larger than the topic's replication_factor: aiond
        produces with acks=all, and the brokers refuse every such write when fewer replicas than
        that can be in sync. The audit topic defaults to 2 (1 with a replication factor of 1), so
        an audit event is on two brokers before it is acknowledged.
        """,
    ),
    Rule(
        "AION507",
        "kafka-acl-entry",
        _E,
        "An ACL entry lacks what its role needs, or has what it does not use.",
        """
        A consumer entry needs group (the consumer group it reads with, the only group it may READ)
        and topics (the roles it reads: least privilege has no default). A producer entry writes the
        topics it names, all four when it names none, and has no group; a principal that also
        consumes gets a consumer entry of its own.
        """,
    ),
    # -- runbooks ----------------------------------------------------------------------------------
    Rule(
        "AION601",
        "runbook-step-kind",
        _E,
        "A runbook step does not say what it does, says two things, or has a field its kind does not use.",
        """
        Each step has exactly one of run (an aionctl command), action (the same, spelled as a
        command path with its options under with:), http, exec (another program), manual (an
        instruction the operator confirms) or elapsed (a measured time). with belongs to action,
        background and env to exec, expect.status to http. A check compares once: one operator
        (equals, lt, matches, ...) per entry.
        """,
    ),
    Rule(
        "AION602",
        "runbook-command",
        _E,
        "A runbook step names an aionctl command or option that does not exist.",
        """
        run: and action: steps are aionctl commands without the word aionctl, checked against
        aionctl's own command table: the command, each option, and how many arguments it takes. A
        misspelled option would otherwise fail at that step, after the steps before it ran. Other
        programs are exec: steps; aionctl itself is never run as an exec: step (run: uses the same
        code in-process and gets the command's JSON result).
        """,
    ),
    Rule(
        "AION603",
        "runbook-reference",
        _E,
        "A ${...} reference names an unknown variable or step, or a step that has not run yet.",
        """
        ${NAME} must be declared under vars:. ${steps.NAME/pointer} reads the result of a step that
        runs earlier (on_failure steps may read any step of the runbook); a step cannot read its
        own result or a later one. Step names are unique, since --from, --only and references name
        them. elapsed.since names an earlier step.
        """,
    ),
    Rule(
        "AION604",
        "runbook-value",
        _E,
        "A runbook value is malformed: a duration, a pointer, a pattern, a number or a ${...}.",
        """
        Durations are 500ms, 30s, 5m, 1h or a number of seconds, at most 24h. Pointers are JSON
        pointers (empty, or starting with /; * stands for every element). matches takes a Python
        regular expression; lt, le, gt and ge compare numbers; length takes a count. A literal $
        is written $$. run: text must split into words (quotes closed).
        """,
    ),
    Rule(
        "AION605",
        "runbook-unused-variable",
        _W,
        "A runbook variable is declared and never used.",
        """
        No step refers to it as ${NAME}, so setting it with --var changes nothing: probably a
        misspelled reference or a leftover. Remove it, or use it.
        """,
    ),
)

RULES: dict[str, Rule] = {rule.id: rule for rule in sorted(_RULES, key=lambda rule: rule.id)}


def get(rule_id: str) -> Rule | None:
    """The rule with this id (case-insensitive), or None."""
    return RULES.get(rule_id.strip().upper())


__all__ = ["RULES", "Rule", "get"]
