"""A run: preflight, enumerate, read, decide, write, and stream one report row per user.

Pages of ListUsers are listed ahead of the reads, up to ``PAGES_IN_FLIGHT`` at a time, so that
one slow call (a latency tail) holds up only its own page's commit, never the budget: the
workers keep reading and writing the later pages meanwhile. Pages are committed in order, as
soon as each is complete: rows appended to the report, then the checkpoint saved. A run
stopped at a time budget, or killed, resumes after its last committed page; the write-intent
journal (a page's intents are recorded in one batch before any of its writes is sent; a
slice's first few writes are each recorded alone, so that writing starts with the first
decision) lets it report users it changed just before dying as ``changed`` with their true
before-state.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from mfa_policy.aws.cloudtrail import (
    DEFAULT_LOOKUPS_PER_SECOND,
    DEFAULT_OVERLAP_SECONDS,
    CloudTrailFeed,
)
from mfa_policy.aws.gateway import (
    CallCounters,
    CognitoError,
    CognitoGateway,
    ListedUser,
    operation_name,
)
from mfa_policy.aws.hedge import HedgeDelay
from mfa_policy.aws.ratelimit import Category, RateLimiter
from mfa_policy.aws.tokens import TOKEN_OTHER_USER, TokenProblem, TokenSource, binding_problem
from mfa_policy.aws.usage import DEFAULT_QUOTAS, QuotaShare
from mfa_policy.core.engine import (
    Decision,
    Mode,
    PoolFacts,
    Rejection,
    after_rejection,
    decide,
    decide_unread,
)
from mfa_policy.core.ledger import (
    Ledger,
    LedgerEntry,
    Observation,
    ReadReason,
    active_in,
    month_of,
    needs_read,
)
from mfa_policy.core.model import (
    FACTOR_ORDER,
    WRITE_REFUSED_STATUSES,
    Factor,
    FactorSetting,
    MfaRead,
    MfaState,
    Outcome,
    User,
)
from mfa_policy.core.policy import Policy
from mfa_policy.core.report import LEDGER, MAU_READ, Counts, mask_identifier
from mfa_policy.exceptions import PreflightError, RunError
from mfa_policy.run.groups import GroupMembers, GroupSnapshot, NoSnapshot, group_members_for_run
from mfa_policy.run.ledger import sync_feed
from mfa_policy.run.state import Checkpoint, Intent, Journal, ProbeMemory

#: Pages listed but not yet committed. Eight pages are 480 users, four seconds of Cognito's
#: UserRead quota: a call as slow as 2 s does not idle the budget. Memory is bounded by it.
PAGES_IN_FLIGHT = 8
#: Threads reading users; writes have ``write_workers`` of their own.
DEFAULT_WORKERS = 32
#: Allowance between our clock and CloudTrail's when comparing an event with an observation.
DEFAULT_SKEW_SECONDS = 5.0
ADMIN = "admin"
ACCESS_TOKEN = "access-token"  # noqa: S105 (the auth mode's name)

Row = dict[str, Any]


class ReportSink(Protocol):
    @property
    def uri(self) -> str: ...

    def sizes(self) -> dict[str, int]: ...
    def truncate(self, sizes: Mapping[str, int]) -> None: ...
    def append(self, rows: list[Row]) -> None: ...
    def finish(self, summary: Mapping[str, Any]) -> None: ...


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def rate_limiter_for(policy: Policy) -> RateLimiter:
    limits = policy.rate_limits
    return RateLimiter(
        {
            Category.USER_READ: limits.user_read,
            Category.USER_RESOURCE_UPDATE: limits.user_resource_update,
            Category.USER_LIST: limits.user_list,
        }
    )


def preflight(gateway: CognitoGateway, policy: Policy) -> tuple[PoolFacts, list[str]]:
    """Refuse a policy the pool cannot honour, before any write; return the pool's facts and
    warnings. Reads GetUserPoolMfaConfig and DescribeUserPool, once each."""
    pool_id = gateway.user_pool_id
    config = gateway.pool_mfa_config()
    settings = gateway.pool_settings()
    enabled = policy.factors_enabled
    warnings = list(policy.warnings)
    if settings is None:
        warnings.append(
            f"cannot describe user pool {pool_id} (no cognito-idp:DescribeUserPool): its "
            "feature plan and account recovery were not checked"
        )
    else:
        # Before the factor check: a Lite pool cannot even configure these, so the plan is
        # the reason, not the configuration.
        needs_plan = sorted(f.value for f in enabled & {Factor.EMAIL, Factor.PASSKEY})
        if settings.tier == "LITE" and needs_plan:
            raise PreflightError(
                f"user pool {pool_id} is on the Lite feature plan, and the policy enables "
                f"{' and '.join(needs_plan)} MFA, which needs the Essentials or Plus plan; "
                "change the pool's plan (UserPoolTier) or the policy"
            )
        if settings.recovery == ("verified_email",) and Factor.EMAIL in enabled:
            raise PreflightError(
                f"user pool {pool_id} recovers accounts by email only: Cognito does not let "
                "users set up email MFA then, and a user who prefers email MFA could not get a "
                "password-reset code by email; add verified_phone_number to the pool's "
                "AccountRecoverySetting or change the policy"
            )
    missing = sorted(f.value for f in enabled - config.factors)
    if missing and config.mode == "OFF":
        # Cognito refuses factor settings on a pool with MFA OFF, so such a pool offers none.
        raise PreflightError(
            f"user pool {pool_id} has MFA OFF, so it offers no factor, and the "
            f"policy enables {', '.join(missing)}; set the pool's MFA to OPTIONAL (or ON) with "
            "those factors configured first"
        )
    if Factor.PASSKEY in enabled and Factor.PASSKEY not in config.factors:
        raise PreflightError(
            f"user pool {pool_id} does not offer passkey MFA, which the policy enables: its "
            "WebAuthnConfiguration.FactorConfiguration is "
            f"{config.passkey_factor_configuration or 'not set'}, not "
            "MULTI_FACTOR_WITH_USER_VERIFICATION; set it with SetUserPoolMfaConfig or change "
            "the policy"
        )
    if missing:
        raise PreflightError(
            f"user pool {pool_id} does not offer {', '.join(missing)} MFA, which "
            f"the policy enables (pool offers: "
            f"{', '.join(sorted(f.value for f in config.factors)) or 'none'}); configure it "
            "with SetUserPoolMfaConfig or change the policy"
        )
    if config.mode == "OFF":
        warnings.append(
            f"user pool {pool_id} has MFA OFF: preferences are stored but users "
            "are never prompted for a second factor until MFA is OPTIONAL or ON"
        )
    disabling = sorted(
        {f.value for r in policy.rules for f in r.factors_set_to(FactorSetting.DISABLED)}
    )
    if config.mode == "ON" and disabling:
        warnings.append(
            f"user pool {pool_id} requires MFA (ON): factors cannot be turned off there, so "
            "only preference changes (and factors turned on) are planned; users whose rule "
            f"disables {', '.join(disabling)} are reported guarded (pool_requires_mfa)"
        )
    first_factors = settings.first_auth_factors if settings is not None else None
    return (
        PoolFacts(
            mfa=config.mode,
            passwordless_sign_in=bool(first_factors and first_factors - {"PASSWORD"}),
        ),
        warnings,
    )


@dataclass(frozen=True)
class _Outcome:
    decision: Decision
    after: MfaState | None = None
    error: str | None = None
    #: False when the user's state was never read (no token, read failed).
    read: bool = True
    #: Where the before-state came from: the read call's name, or "ledger".
    source: str | None = None
    read_reason: ReadReason | None = None
    observed_at: float | None = None
    #: For a read that counts as MAU: whether the user was not yet active this month.
    mau_added: bool | None = None


@dataclass(frozen=True)
class _Processed:
    row: Row
    observation: Observation | None = None


class _TokenRefused(Exception):
    """A stored token that is not the listed user's: the user gets ``token_invalid``."""

    def __init__(self, problem: TokenProblem) -> None:
        super().__init__(problem.reason)
        self.problem = problem


class Runner:
    """One run of a policy over a pool, slice by slice."""

    def __init__(
        self,
        gateway: CognitoGateway,
        policy: Policy,
        *,
        mode: Mode,
        report: ReportSink,
        probes: ProbeMemory,
        journal: Journal,
        save_checkpoint: Callable[[Checkpoint], None],
        auth: str = ADMIN,
        tokens: TokenSource | None = None,
        workers: int = DEFAULT_WORKERS,
        on_rows: Callable[[list[Row]], None] | None = None,
        ledger: Ledger | None = None,
        feed: CloudTrailFeed | None = None,
        full: bool = False,
        overlap_seconds: float = DEFAULT_OVERLAP_SECONDS,
        skew_seconds: float = DEFAULT_SKEW_SECONDS,
        clock: Callable[[], float] = time.time,
        changed_subs: frozenset[str] = frozenset(),
        pages_in_flight: int = PAGES_IN_FLIGHT,
        group_snapshot: GroupSnapshot | None = None,
    ) -> None:
        if auth == ACCESS_TOKEN and tokens is None:
            raise RunError("access-token mode needs a token table (--token-table)")
        self.gateway = gateway
        self.policy = policy
        self.mode = mode
        self.report = report
        self.probes = probes
        self.journal = journal
        self.save_checkpoint = save_checkpoint
        self.auth = auth
        self.tokens = tokens
        self.workers = workers
        self.on_rows = on_rows
        self.ledger = ledger
        self.feed = feed
        self.full = full
        self.overlap_seconds = overlap_seconds
        self.skew_seconds = skew_seconds
        #: Users known to have changed (an EventBridge event): always read.
        self.changed_subs = changed_subs
        self.pages_in_flight = max(1, pages_in_flight)
        #: Where the run keeps the membership it listed in its first slice.
        self.group_snapshot = group_snapshot or NoSnapshot()
        self._clock = clock
        #: Set per slice from the checkpoint: read everyone, and the month MAUs are billed in.
        self._full_read = ledger is None
        self._month = month_of(clock())
        #: Writes a slice still sends one by one as they are decided (``_take_early_write``).
        self._early_writes = 0
        self._early_lock = threading.Lock()
        #: What preflight learnt of the pool; a resumed slice takes it from the checkpoint.
        self.pool = PoolFacts()

    def start(self, run_id: str | None = None) -> Checkpoint:
        """Preflight, the change feed into the ledger, and a fresh checkpoint; raises
        PreflightError before anything is written."""
        pool, warnings = preflight(self.gateway, self.policy)
        self.pool = pool
        now = self._clock()
        ledger_info: dict[str, Any] = {"used": False, "full_read": True, "reason": "no ledger"}
        if self.ledger is not None:
            sync = sync_feed(
                self.ledger,
                self.feed,
                now=now,
                full_requested=self.full,
                overlap_seconds=self.overlap_seconds,
            )
            warnings += sync.warnings
            ledger_info = {
                "used": True,
                "full_read": sync.full,
                "reason": sync.reason,
                "cloudtrail_lookups": sync.lookups,
                "cloudtrail_events": sync.events,
                "window": [_iso(sync.window_start), _iso(sync.window_end)],
            }
        checkpoint = Checkpoint(
            run_id=run_id or new_run_id(self.mode.value),
            user_pool_id=self.gateway.user_pool_id,
            mode=self.mode.value,
            auth=self.auth,
            policy_hash=self.policy.hash,
            started_at=now_iso(),
            warnings=warnings,
            report_uri=self.report.uri,
            report=self.report.sizes(),
            counts=self._counts_with_calls(Counts()).to_dict(),
            pool={"mfa": pool.mfa, "passwordless_sign_in": pool.passwordless_sign_in},
            month=month_of(now),
            ledger=ledger_info,
        )
        self.save_checkpoint(checkpoint)
        return checkpoint

    def run_slice(
        self, checkpoint: Checkpoint, keep_going: Callable[[], bool] = lambda: True
    ) -> Checkpoint:
        """Process pages until the pool is done or ``keep_going()`` says stop; commit each."""
        if checkpoint.done:
            return checkpoint
        if checkpoint.policy_hash != self.policy.hash:
            raise RunError(
                f"run {checkpoint.run_id} was started with policy "
                f"{checkpoint.policy_hash}, not {self.policy.hash}; start a new run"
            )
        self.report.truncate(checkpoint.report)
        self.pool = PoolFacts(**checkpoint.pool) if checkpoint.pool else PoolFacts()
        checkpoint = replace(checkpoint, slices=checkpoint.slices + 1)
        self._full_read = self.ledger is None or bool(checkpoint.ledger.get("full_read", True))
        self._month = checkpoint.month or month_of(self._clock())
        in_flight: deque[tuple[int, str | None, list[Future[_Processed]]]] = deque()
        page, token = checkpoint.next_page, checkpoint.next_token
        first_page = page
        listed_all = False
        # Writes have threads of their own: queued behind the reads of the pages listed ahead,
        # a page's writes would wait seconds while the UserResourceUpdate budget sat idle.
        with (
            ThreadPoolExecutor(self.workers, thread_name_prefix="user") as readers,
            ThreadPoolExecutor(write_workers(self.workers), thread_name_prefix="write") as writers,
        ):
            # Listed while the first page is: no user is decided before both are in.
            groups_listed = readers.submit(
                group_members_for_run,
                self.policy.groups_referenced,
                self.group_snapshot,
                self.gateway.group_members,
            )
            self._early_writes = early_writes(self.workers)
            while True:
                # Commit every complete page at the head, in order, before listing more.
                while in_flight and all(f.done() for f in in_flight[0][2]):
                    checkpoint = self._commit_oldest(checkpoint, in_flight)
                # A slice always takes at least one page, so a loop of slices always progresses.
                if (
                    len(in_flight) < self.pages_in_flight
                    and not listed_all
                    and (page == first_page or keep_going())
                ):
                    users_page = self.gateway.list_users_page(token)
                    tokens = self._tokens_for(users_page.users)
                    entries = (
                        self.ledger.get_many(u.sub for u in users_page.users)
                        if self.ledger is not None
                        else {}
                    )
                    futures = self._submit_page(
                        readers,
                        writers,
                        users_page.users,
                        page,
                        groups_listed.result(),
                        tokens,
                        entries,
                    )
                    in_flight.append((page, users_page.next_token, futures))
                    page, token = page + 1, users_page.next_token
                    listed_all = token is None
                    continue
                if not in_flight:
                    break
                # The window is full (or the listing is done): wait for the oldest page.
                checkpoint = self._commit_oldest(checkpoint, in_flight)
        if checkpoint.done:
            checkpoint = replace(checkpoint, ended_at=now_iso())
            self.save_checkpoint(checkpoint)
            self.report.finish(summary_of(checkpoint))
        return checkpoint

    # -- commit ---------------------------------------------------------------------------

    def _commit_oldest(
        self,
        checkpoint: Checkpoint,
        in_flight: deque[tuple[int, str | None, list[Future[_Processed]]]],
    ) -> Checkpoint:
        """Wait for the oldest page in flight and commit it."""
        page, token_after, futures = in_flight.popleft()
        return self._commit(checkpoint, page, token_after, [f.result() for f in futures])

    def _commit(
        self,
        checkpoint: Checkpoint,
        page: int,
        token_after: str | None,
        processed: list[_Processed],
    ) -> Checkpoint:
        rows = [p.row for p in processed]
        self.report.append(rows)
        if self.ledger is not None:
            # Before the checkpoint: a page redone after a crash finds its reads recorded.
            self.ledger.record(p.observation for p in processed if p.observation is not None)
        counts = Counts.from_dict(checkpoint.counts)
        for row in rows:
            counts.add_row(row)
        new_warnings = [w for w in self.gateway.warnings if w not in checkpoint.warnings]
        checkpoint = replace(
            checkpoint,
            warnings=[*checkpoint.warnings, *new_warnings],
            next_page=page + 1,
            next_token=token_after,
            done=token_after is None,
            counts=self._counts_with_calls(counts).to_dict(),
            report=self.report.sizes(),
        )
        self.save_checkpoint(checkpoint)
        self.journal.clear_through(page)
        if self.on_rows:
            self.on_rows(rows)
        return checkpoint

    def _counts_with_calls(self, counts: Counts) -> Counts:
        """Move the gateway's call counters into ``counts`` (the checkpoint carries them)."""
        self.gateway.counters.drain_into(counts)
        return counts

    def _tokens_for(self, users: list[ListedUser]) -> dict[str, str]:
        if self.auth != ACCESS_TOKEN:
            return {}
        assert self.tokens is not None
        return self.tokens.get_many(u.username for u in users)

    # -- one page -------------------------------------------------------------------------

    def _submit_page(
        self,
        readers: ThreadPoolExecutor,
        writers: ThreadPoolExecutor,
        users: list[ListedUser],
        page: int,
        groups: Mapping[str, GroupMembers],
        tokens: Mapping[str, str],
        entries: Mapping[str, LedgerEntry],
    ) -> list[Future[_Processed]]:
        """Read and decide every user of the page; once all are decided, journal the page's
        writes in one batch (durable before any is sent: one S3 PUT per page in AWS), then send
        them; a write taken early (``_take_early_write``) is journaled and sent on its own as
        soon as it is decided. Returns one future row per user, in listing order. Nothing
        blocks a worker waiting for the others, so a pool of any size cannot deadlock on a
        page."""
        rows: list[Future[_Processed]] = [Future() for _ in users]
        writes: list[tuple[int, _Write]] = []
        failure: list[BaseException] = []
        remaining = [len(users)]
        lock = threading.Lock()

        def send(batch: list[tuple[int, _Write]]) -> None:
            if failure:  # the run is going down: send nothing more from this page
                for index, _ in batch:
                    rows[index].set_exception(failure[0])
                return
            unsent = deque(batch)
            try:
                self.journal.record_many([w.intent(page) for _, w in batch])
                while unsent:
                    index, write = unsent[0]
                    writers.submit(self._write, write, page).add_done_callback(
                        partial(_settle, rows[index])
                    )
                    unsent.popleft()
            except BaseException as exc:  # each row carries it to the commit, which raises
                for index, _ in unsent:
                    rows[index].set_exception(exc)

        def decided(index: int, future: Future[_Processed | _Write]) -> None:
            exc = future.exception()
            result = None if exc is not None else future.result()
            early = isinstance(result, _Write) and self._take_early_write()
            with lock:
                if exc is not None:
                    failure.append(exc)
                elif isinstance(result, _Write) and not early:
                    writes.append((index, result))
                remaining[0] -= 1
                last = remaining[0] == 0
            if exc is not None:
                rows[index].set_exception(exc)
            elif early:
                assert isinstance(result, _Write)
                send([(index, result)])
            elif not isinstance(result, _Write):
                assert result is not None
                rows[index].set_result(result)
            if last:
                send(writes)

        for index, listed in enumerate(users):
            readers.submit(
                self._process,
                listed,
                page,
                groups,
                tokens.get(listed.username),
                entries.get(listed.sub),
            ).add_done_callback(partial(decided, index))
        return rows

    def _take_early_write(self) -> bool:
        """Whether this decided write goes out at once, journaled on its own, rather than
        with its page's batch: only while the slice fills its writers. Waiting for the first
        page to be decided would idle the UserResourceUpdate budget for the page's reads and
        their slowest call; after the fill, the writers always have a page's batch queued."""
        with self._early_lock:
            if self._early_writes <= 0:
                return False
            self._early_writes -= 1
            return True

    def _write(self, write: _Write, page: int) -> _Processed:
        return write.finish(self._apply(write.user, write.decision, page, write.token))

    # -- one user -------------------------------------------------------------------------

    def process_user(
        self, listed: ListedUser, groups: Mapping[str, GroupMembers], entry: LedgerEntry | None
    ) -> tuple[Row, Observation | None]:
        """One user outside a page (a user an EventBridge event names): the row and what the
        ledger should record. Admin auth."""
        processed = self._process(listed, 0, groups, None, entry)
        if isinstance(processed, _Write):
            self.journal.record_many([processed.intent(0)])
            processed = self._write(processed, 0)
        return processed.row, processed.observation

    def group_members(self) -> dict[str, GroupMembers]:
        """The groups the policy names, listed now (one user's event needs today's)."""
        return group_members_for_run(
            self.policy.groups_referenced, NoSnapshot(), self.gateway.group_members
        )

    def _process(
        self,
        listed: ListedUser,
        page: int,
        groups: Mapping[str, GroupMembers],
        token: str | None,
        entry: LedgerEntry | None = None,
    ) -> _Processed | _Write:
        member_of = frozenset(g for g, members in groups.items() if listed.username in members)
        # No read for a user whose outcome does not depend on their MFA state (excluded,
        # skipped, unmanaged, deferred): such a row has no before-state.
        unread = decide_unread(self.policy, as_user(listed, member_of))
        if unread is not None:
            return _Processed(row_of(_Outcome(unread, read=False), self.mode))
        skeleton = Decision(listed.username, listed.sub, None, Outcome.SKIPPED, "", MfaState())
        if self.auth == ACCESS_TOKEN and token is None:
            return _Processed(
                row_of(
                    _Outcome(
                        replace(skeleton, reason="no_token: no stored access token"), read=False
                    ),
                    self.mode,
                )
            )
        # Only apply probes; drift needs no probe-memory lookup (one SQLite query per user).
        probe_allowed = (
            self.mode is Mode.APPLY
            and self.policy.enrollment.probe
            and self.probes.allowed(listed.sub)
        )
        reason = needs_read(
            listed,
            entry,
            self.changed_subs,
            full=self._full_read,
            skew_seconds=self.skew_seconds,
        )
        if reason is None and self.mode is Mode.APPLY and self.journal.get(listed.sub):
            # Written (or refused) just before an interruption: the row must be the one the
            # uninterrupted run writes, which only a fresh read can tell.
            reason = ReadReason.BEFORE_WRITE
        if reason is None:
            assert entry is not None and entry.mfa is not None
            known = replace(
                as_user(listed, member_of),
                mfa=entry.mfa,
                legacy_sms=entry.legacy_sms,
                auth_factors=(
                    frozenset(entry.auth_factors) if entry.auth_factors is not None else None
                ),
            )
            decision = decide(
                self.policy, known, self.mode, probe_allowed=probe_allowed, pool=self.pool
            )
            if self.mode is Mode.DRIFT or decision.request is None:
                outcome = _Outcome(
                    decision, after=known.mfa, source=LEDGER, observed_at=entry.observed_at
                )
                return _Processed(row_of(outcome, self.mode))
            # The rule for writes: never on the strength of the ledger. Read fresh first.
            reason = ReadReason.BEFORE_WRITE
        read_at = self._clock()
        try:
            user, source = self._read(listed, member_of, token)
        except _TokenRefused as refused:
            invalid = replace(
                skeleton, outcome=Outcome.TOKEN_INVALID, reason=refused.problem.reason
            )
            return _Processed(row_of(_Outcome(invalid, read=False), self.mode))
        except CognitoError as exc:
            return _Processed(
                row_of(replace(self._error_outcome(skeleton, exc), read=False), self.mode)
            )
        # Only AdminGetUser is documented to make the user a billable MAU.
        mau_added = (not active_in(entry, self._month)) if source == MAU_READ else None

        def stamped(outcome: _Outcome) -> _Outcome:
            return replace(
                outcome,
                source=source,
                read_reason=reason,
                observed_at=read_at,
                mau_added=mau_added,
            )

        observation = Observation(
            listed.sub,
            user.mfa,
            read_at,
            source,
            listed_modified=listed.last_modified,
            auth_factors=tuple(sorted(user.auth_factors))
            if user.auth_factors is not None
            else None,
            legacy_sms=user.legacy_sms,
        )
        if self.mode is Mode.APPLY:
            resumed = self._resumed(user, probe_allowed, page, token)
            if resumed is not None:
                return self._after_write(stamped(resumed), observation)
        decision = decide(self.policy, user, self.mode, probe_allowed=probe_allowed, pool=self.pool)
        if self.mode is Mode.DRIFT or decision.request is None:
            return _Processed(
                row_of(stamped(_Outcome(decision, after=user.mfa)), self.mode), observation
            )
        return _Write(
            user, decision, token, lambda out: self._after_write(stamped(out), observation)
        )

    def _after_write(self, outcome: _Outcome, observation: Observation) -> _Processed:
        """The ledger takes the state the accepted write left, dated from the read before it,
        so a change the user made in between is still newer than the observation."""
        if outcome.after is not None and outcome.after != observation.mfa:
            observation = replace(observation, mfa=outcome.after, observed_by="admin-write")
        return _Processed(row_of(outcome, self.mode), observation)

    def _resumed(
        self, user: User, probe_allowed: bool, page: int, token: str | None
    ) -> _Outcome | None:
        """A user this run wrote (or tried to) just before it was interrupted: report it as
        that write, or finish it, replaying the refusals Cognito gave so the row is the one an
        uninterrupted run writes."""
        intent = self.journal.get(user.sub)
        if intent is None:
            return None
        rejections = [Rejection(r) for r in intent.rejections]
        # A refused TOTP probe was a probe: its failure, now in probe memory, came from this run.
        probed = probe_allowed or any(
            r in rejections for r in (Rejection.TOTP_NOT_VERIFIED, Rejection.PASSKEY_NOT_REGISTERED)
        )
        redo = decide(
            self.policy,
            replace(user, mfa=intent.before, legacy_sms=intent.legacy_sms),
            Mode.APPLY,
            probe_allowed=probed,
            pool=self.pool,
        )
        for rejection in rejections:
            redo = after_rejection(redo, rejection)
        if redo.target != intent.target:
            return None
        # A legacy SMS migration changes no state: that it landed shows as MFAOptions gone.
        migrated = intent.legacy_sms and not user.legacy_sms
        if user.mfa == intent.target and (intent.before != user.mfa or rejections or migrated):
            return _Outcome(redo, after=user.mfa)
        if user.mfa == intent.before and redo.request is not None:
            # Its intent is in the journal already (that is how we got here): send it now.
            return self._apply(user, redo, page, token, rejections)
        return self._inferred(user, intent, redo)

    def _inferred(self, user: User, intent: Intent, redo: Decision) -> _Outcome | None:
        """A follow-up write whose intent the journal did not keep (the report bucket keeps
        one intent per user a page, written before the page's first write): replay the
        refusals that lead from the intent's request to the state the user is in, each a
        factor that request enabled and the user does not have now."""
        if user.mfa == intent.before:
            return None
        for _ in range(len(Factor)):
            if redo.target == user.mfa or redo.request is None or redo.target is None:
                break
            enabled = redo.target.enabled
            refused = next(
                (
                    f
                    for f in FACTOR_ORDER
                    if f in _REFUSAL
                    and f in enabled
                    and f not in intent.before.enabled
                    and f not in user.mfa.enabled
                ),
                None,
            )
            if refused is None:
                return None
            if refused is Factor.TOTP:
                self.probes.record_failure(user.sub)
            redo = after_rejection(redo, _REFUSAL[refused])
        if redo.target != user.mfa or redo.request is None:
            return None
        return _Outcome(redo, after=user.mfa)

    def _read(
        self, listed: ListedUser, groups: frozenset[str], token: str | None
    ) -> tuple[User, str]:
        """The listed user joined with their MFA read, and the read's operation; raises
        _TokenRefused when ``token`` is not theirs (nothing is sent with a token whose claims
        name another pool or user)."""
        if token is not None:
            problem = binding_problem(token, user_pool_id=self.gateway.user_pool_id, sub=listed.sub)
            if problem is not None:
                raise _TokenRefused(problem)
        read = self._read_mfa(listed.username, token, sms_mfa_option=listed.sms_mfa_option)
        if token is not None and not _answers_for(read, listed):
            raise _TokenRefused(TOKEN_OTHER_USER)
        user = replace(
            as_user(listed, groups),
            status=read.status or listed.status,
            enabled=listed.enabled if read.enabled is None else read.enabled,
            attributes=read.attributes or listed.attributes,
            mfa=read.mfa,
            legacy_sms=read.legacy_sms,
            auth_factors=read.auth_factors,
        )
        return user, operation_name(read.operation)

    def _read_mfa(self, username: str, token: str | None, *, sms_mfa_option: bool) -> MfaRead:
        return self.gateway.read_user(username, access_token=token, sms_mfa_option=sms_mfa_option)

    def _apply(
        self,
        user: User,
        decision: Decision,
        page: int,
        token: str | None,
        rejections: list[Rejection] | None = None,
    ) -> _Outcome:
        refused = list(rejections or ())
        for _ in range(len(Factor) + 1):  # each rejection freezes one more factor
            request = decision.request
            assert decision.target is not None
            if request is None:
                if refused:  # nothing left to send: remember why, for a resumed run's row
                    self._record_intent(page, user, decision.target, refused)
                return _Outcome(decision, after=user.mfa)
            if refused:  # the first request's intent is the page's (or the resumed journal's)
                self._record_intent(page, user, decision.target, refused)
            try:
                if token is not None:
                    self.gateway.token_write(token, request)
                else:
                    self.gateway.admin_write(user.username, request)
            except CognitoError as exc:
                rejection = exc.rejection
                if rejection is None and exc.unanswered:
                    return self._settle_unanswered(user, decision, token, exc)
                if rejection is None:
                    return self._error_outcome(decision, exc)
                if rejection.factor in (Factor.TOTP, Factor.PASSKEY):
                    self.probes.record_failure(user.sub)
                refused.append(rejection)
                decision = after_rejection(decision, rejection)
                continue
            if decision.probing:
                self.probes.forget(user.sub)
            return _Outcome(decision, after=decision.target)
        raise AssertionError("every rejection freezes a factor, so this loop ends")

    def _record_intent(
        self, page: int, user: User, target: MfaState, refused: list[Rejection]
    ) -> None:
        self.journal.record_followup(
            Intent(
                page,
                user.sub,
                user.mfa,
                target,
                tuple(r.value for r in refused),
                legacy_sms=user.legacy_sms,
            )
        )

    def _settle_unanswered(
        self, user: User, decision: Decision, token: str | None, exc: CognitoError
    ) -> _Outcome:
        """A write whose last attempt timed out or got a 5xx may have been applied all the
        same: read the user again and report what Cognito holds, so rollback sees it."""
        # The auth-factors reads show no MFAOptions: the listing's legacy SMS still counts,
        # unless the write itself set SMS with the current API.
        legacy = user.legacy_sms and not (
            decision.request is not None and Factor.SMS in decision.request.blocks
        )
        try:
            now = self._read_mfa(user.username, token, sms_mfa_option=legacy).mfa
        except CognitoError:
            return self._error_outcome(decision, exc)
        if now == decision.target:
            if decision.probing:
                self.probes.forget(user.sub)
            return _Outcome(decision, after=now)
        failed = self._error_outcome(decision, exc)
        return replace(
            failed,
            decision=replace(
                failed.decision,
                reason=f"{failed.decision.reason}; read again after it: not applied",
            ),
            after=now,
        )

    def _error_outcome(self, decision: Decision, exc: CognitoError) -> _Outcome:
        if exc.code == "UserNotFoundException":
            outcome, reason = Outcome.SKIPPED, "user_not_found: deleted during the run"
        elif exc.code == "NotAuthorizedException" and self.auth == ACCESS_TOKEN:
            problem = exc.token_problem
            outcome = Outcome.TOKEN_INVALID
            reason = (
                f"token_rejected: stored access token {problem}"
                if problem
                else f"token_rejected: {exc.message or 'stored access token refused'}"
            )
        elif exc.code == "UserNotConfirmedException":
            outcome, reason = Outcome.SKIPPED, WRITE_REFUSED_STATUSES["UNCONFIRMED"]
        elif exc.code == "PasswordResetRequiredException":
            outcome, reason = Outcome.SKIPPED, WRITE_REFUSED_STATUSES["RESET_REQUIRED"]
        else:
            outcome, reason = Outcome.FAILED, f"{exc.operation}: {exc.message}"
        failed = replace(decision, outcome=outcome, reason=reason, request=None)
        return _Outcome(failed, after=None, error=exc.code)


@dataclass(frozen=True)
class _Write:
    """A decided user whose write waits until the page's intents are journaled."""

    user: User
    decision: Decision
    token: str | None
    #: Turns the write's outcome into the user's row and ledger observation.
    finish: Callable[[_Outcome], _Processed]

    def intent(self, page: int) -> Intent:
        assert self.decision.target is not None
        return Intent(
            page,
            self.user.sub,
            self.user.mfa,
            self.decision.target,
            legacy_sms=self.user.legacy_sms,
        )


#: The refusal Cognito answers for a factor a user cannot have yet.
_REFUSAL = {rejection.factor: rejection for rejection in Rejection}


def _settle(row: Future[_Processed], done: Future[_Processed]) -> None:
    exc = done.exception()
    if exc is not None:
        row.set_exception(exc)
    else:
        row.set_result(done.result())


def _answers_for(read: MfaRead, listed: ListedUser) -> bool:
    """Cognito answered the token's read for the listed user: GetUser names the sub, the
    auth-factors read only the username (each unique in the pool)."""
    if read.sub is not None:
        return read.sub == listed.sub
    return read.username is not None and read.username == listed.username


def write_workers(workers: int) -> int:
    """Threads for writes beside ``workers`` for reads: UserResourceUpdate (25/s) with
    30-80 ms answers keeps two busy; the rest absorb a latency tail and probe fallbacks."""
    return max(4, workers // 4)


def early_writes(workers: int) -> int:
    """Writes a slice sends one by one as they are decided, each in a journal write of its
    own (an S3 PUT in AWS), before it sends a page's writes together: enough to keep the
    writers busy until the first page is decided."""
    return 2 * write_workers(workers)


def as_user(listed: ListedUser, groups: frozenset[str]) -> User:
    """What ListUsers tells of a user, before their MFA state is read."""
    return User(
        listed.username, listed.sub, listed.status, listed.enabled, listed.attributes, groups
    )


def row_of(result: _Outcome, mode: Mode) -> Row:
    d = result.decision
    row: Row = {
        "username": mask_identifier(d.username),
        "sub": d.sub,
        "rule": d.rule,
        "outcome": d.outcome.value,
        "reason": d.reason,
        "before": d.before.to_dict() if result.read else None,
        "desired": d.desired.to_dict() if d.desired else None,
        "request": d.request.to_dict() if d.request else None,
    }
    if mode is Mode.APPLY:
        row["after"] = result.after.to_dict() if result.after else None
    if d.legacy_sms and result.read:
        row["legacy_sms"] = True
    if result.error:
        row["error"] = result.error
    if result.read and result.source is not None:
        row["state_source"] = result.source
        if result.source == LEDGER:
            # When the ledger's state was seen; a state read in this run is of the run's time
            # (and a row without a clock in it is the same in a resumed run and an unbroken one).
            row["observed_at"] = _iso(result.observed_at)
        if result.read_reason is not None:
            row["read_reason"] = result.read_reason.value
        if result.mau_added is not None:
            row["mau_added"] = result.mau_added
    return row


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def new_run_id(mode: str) -> str:
    return f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-{mode}-{uuid.uuid4().hex[:6]}"


def summary_of(checkpoint: Checkpoint) -> dict[str, Any]:
    counts = Counts.from_dict(checkpoint.counts)
    return {
        "run_id": checkpoint.run_id,
        "user_pool_id": checkpoint.user_pool_id,
        "mode": checkpoint.mode,
        "auth": checkpoint.auth,
        "policy_hash": checkpoint.policy_hash,
        "started_at": checkpoint.started_at,
        "ended_at": checkpoint.ended_at,
        "complete": checkpoint.done,
        "users": counts.users,
        "counts": counts.to_dict(),
        "slices": checkpoint.slices,
        "report_uri": checkpoint.report_uri,
        "warnings": checkpoint.warnings,
        "cost": counts.cost_dict(),
        "ledger": checkpoint.ledger,
    }


def execute_slice(
    client: Any,
    policy: Policy,
    user_pool_id: str,
    *,
    probe_db: Path,
    checkpoint: Checkpoint | None,
    run_id: str,
    keep_going: Callable[[], bool],
    cloudtrail: Any | None = None,
    lookups_per_second: float = DEFAULT_LOOKUPS_PER_SECOND,
    quota_share: QuotaShareSettings | None = None,
    **runner_options: Any,
) -> Checkpoint:
    """One slice of a run as every driver runs it: a gateway paced by the policy's rate limits
    (kept under what the live application leaves, with ``quota_share``) that hedges user
    reads, the pool's probe memory, the state ledger's CloudTrail feed when a ledger and a
    ``cloudtrail`` client are given, a start (preflight) or a resume, then the slice; probes
    and the gateway closed. ``runner_options`` are the Runner's own (mode, report, journal,
    ledger, full, ...)."""
    ledger = runner_options.get("ledger")
    limiter = rate_limiter_for(policy)
    # Hedged reads: a run's last page waits for its slowest read, so a latency tail holds its end.
    gateway = CognitoGateway(client, user_pool_id, limiter=limiter, hedge=HedgeDelay())
    share = None
    if quota_share is not None:
        share = quota_share.attach(limiter, gateway.counters)
        try:
            share.start()
        except Exception as exc:
            raise RunError(
                "cannot read Cognito's usage metrics from CloudWatch (the run needs "
                f"cloudwatch:GetMetricData to share the quota): {exc}"
            ) from None
    feed = (
        CloudTrailFeed(
            cloudtrail,
            user_pool_id,
            counters=gateway.counters,
            lookups_per_second=lookups_per_second,
        )
        if cloudtrail is not None and ledger is not None
        else None
    )
    probes = ProbeMemory(probe_db, reprobe_after_days=policy.enrollment.reprobe_after_days)
    try:
        runner = Runner(gateway, policy, probes=probes, feed=feed, **runner_options)
        if checkpoint is None:
            checkpoint = runner.start(run_id)
        return runner.run_slice(checkpoint, keep_going)
    finally:
        probes.close()
        gateway.close()
        if share is not None:
            share.stop()


@dataclass(frozen=True)
class QuotaShareSettings:
    """Share the quota with the live application: CloudWatch client, headroom, quotas."""

    cloudwatch: Any
    headroom: float
    quotas: Mapping[Category, float] = field(default_factory=lambda: dict(DEFAULT_QUOTAS))
    period: int = 60

    def attach(self, limiter: RateLimiter, counters: CallCounters) -> QuotaShare:
        share = QuotaShare(
            self.cloudwatch,
            limiter,
            headroom=self.headroom,
            quotas=self.quotas,
            period=self.period,
            on_request=lambda: counters.count("get_metric_data"),
        )
        limiter.observer = lambda category, throttled: share.own.sent(category, throttled=throttled)
        return share
