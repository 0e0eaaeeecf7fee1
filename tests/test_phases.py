"""One Tune run for every stage: the searcher's phases, their order, their shares, their restore."""

from dataclasses import dataclass, field

import pytest
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import Searcher

from ascood.sweep.paths import OPTUNA_TRIAL
from ascood.sweep.phases import (
    ASHA,
    PHASE,
    Job,
    Phase,
    PhaseScheduler,
    SweepSearcher,
    attach,
    detach,
    grid_configs,
    pick,
    ranks,
)
from ascood.sweep.stages import STAGES, stage_jobs


@dataclass
class Runtime:
    """Grid phases of `trials` trials each; records what the searcher asked of it."""

    trials: dict[str, int]
    log: list[tuple[str, str]] = field(default_factory=list)
    finished: bool = False

    def plan(self, scope, stage):
        n = self.trials.get(stage, 0)
        if n == 0:
            self.log.append(("skip", f"{scope}:{stage}"))
            return None
        configs = [{"i": i} for i in range(n)]
        return Phase(key=f"{scope}:{stage}", scope=scope, stage=stage, meta={"stage": stage}, planned=n, left=n,
                     configs=configs)

    def begin(self, phase):
        self.log.append(("begin", phase.key))

    def end(self, phase):
        self.log.append(("end", phase.key))

    def all_ended(self):
        self.finished = True


def _chains(*stages, joint="robust"):
    """Per dataset a and b the stages one after another, then the joint stage after all of them."""
    jobs = []
    for scope in "ab":
        for i, stage in enumerate(stages):
            jobs.append(Job(f"{scope}/{stage}", scope, stage, (f"{scope}/{stages[i - 1]}",) if i else ()))
    jobs.append(Job(f"all/{joint}", "all", joint, (f"a/{stages[-1]}", f"b/{stages[-1]}")))
    return jobs


def _searcher(name, runtime, slots=2, jobs=None):
    attach(name, runtime)
    return SweepSearcher(name, jobs or _chains("search", "final", "skipped"), slots)


def _drain(searcher, counter, live):
    """Ask for trials until the searcher gives none; returns what it handed out."""
    out = []
    while True:
        tid = f"t{counter[0]}"
        config = searcher.suggest(tid)
        if config is None or config == Searcher.FINISHED:
            return out, config
        counter[0] += 1
        live.append(tid)
        out.append((tid, config))


def test_grid_configs_are_every_combination_with_the_fixed_values():
    configs = grid_configs({"candidate": {"grid_search": ["x", "y"]}, "seed": {"grid_search": [0, 1]}, "k": 3})
    assert configs == [{"k": 3, "candidate": c, "seed": s} for c in "xy" for s in (0, 1)]


def test_pick_asks_the_job_with_fewest_live_then_fewest_handed_trials_first_and_skips_jobs_with_nothing_to_hand_out():
    def job(name, left):
        return Job(name, name, "s", phase=Phase(key=name, scope=name, stage="s", meta={}, planned=left, left=left,
                                               configs=[]))

    jobs = [job("a", 3), job("b", 3), job("c", 0)]
    assert [j.name for j in pick(jobs, {"a": 1, "b": 0, "c": 0})] == ["b", "a"]
    assert [j.name for j in pick(jobs, {"a": 1, "b": 1})] == ["a", "b"]
    jobs[0].handed = 2
    assert [j.name for j in pick(jobs, {"a": 1, "b": 1})] == ["b", "a"], "a tie goes to the job handed fewer"
    assert [j.name for j in pick(jobs, {"a": 0, "b": 1})] == ["a", "b"], "live trials count before handed ones"
    jobs[1].rank = 1
    assert [j.name for j in pick(jobs, {"a": 0, "b": 1})] == ["b", "a"], "a job others wait on goes first"


def test_ranks_count_every_job_waiting_directly_or_not_and_refuse_unknown_jobs_and_cycles():
    assert ranks(_chains("search", "final")) == {"a/search": 2, "a/final": 1, "b/search": 2, "b/final": 1,
                                                 "all/robust": 0}
    with pytest.raises(ValueError, match="'x' waits on 'nowhere'"):
        ranks([Job("x", "a", "s", ("nowhere",))])
    with pytest.raises(ValueError, match="cycle: x -> y -> x"):
        ranks([Job("x", "a", "s", ("y",)), Job("y", "a", "s", ("x",))])


def test_the_sweeps_stages_wait_on_what_they_read_or_reuse_and_through_stages_left_out():
    jobs = {j.name: set(j.after) for j in stage_jobs(STAGES, list(STAGES), ["a", "b"])}
    assert jobs == {
        "a/search": set(), "b/search": set(), "a/baseline": set(), "b/baseline": set(),
        "a/final": {"a/search"}, "b/final": {"b/search"},
        "a/comparison": {"a/baseline"}, "b/comparison": {"b/baseline"},
        "all/robust": {"a/baseline", "b/baseline"},
        "a/transfer": {"a/final", "a/comparison", "all/robust", "a/search", "b/search"},
        "b/transfer": {"b/final", "b/comparison", "all/robust", "a/search", "b/search"},
    }
    without = [s for s in STAGES if s.name not in ("robust", "comparison")]
    jobs = {j.name: set(j.after) for j in stage_jobs(STAGES, without, ["a", "b"])}
    assert jobs["a/transfer"] == {"a/final", "a/baseline", "b/baseline", "a/search", "b/search"}


def test_a_job_that_waits_on_nothing_fills_the_slots_a_stages_stragglers_leave():
    runtime = Runtime({"search": 2, "final": 1, "comparison": 3, "robust": 1})
    jobs = [Job("a/search", "a", "search"), Job("a/final", "a", "final", ("a/search",)),
            Job("a/comparison", "a", "comparison"), Job("all/robust", "all", "robust", ("a/final",))]
    searcher = _searcher("fill", runtime, slots=2, jobs=jobs)
    counter, live = [0], []
    try:
        handed, _ = _drain(searcher, counter, live)
        assert [c[PHASE] for _, c in handed] == ["a:search", "a:search"], "what others wait on goes first"
        searcher.on_trial_complete("t0", {})
        live.remove("t0")
        handed, _ = _drain(searcher, counter, live)
        assert [c[PHASE] for _, c in handed] == ["a:comparison"], "the search's straggler leaves its slot"
        searcher.on_trial_complete("t1", {})
        live.remove("t1")
        handed, _ = _drain(searcher, counter, live)
        assert [c[PHASE] for _, c in handed] == ["a:final"], "the final, waited on, before the comparison"
    finally:
        detach("fill")


def test_stages_run_in_order_per_job_and_sections_one_after_another():
    runtime = Runtime({"search": 3, "final": 1, "robust": 2})
    searcher = _searcher("order", runtime, slots=2)
    counter, live = [0], []
    try:
        handed, _ = _drain(searcher, counter, live)
        assert [c[PHASE] for _, c in handed] == ["a:search", "b:search"], "one slot each while both search"
        assert all(c["sweep"] == {"stage": "search"} for _, c in handed)
        searcher.on_trial_complete("t0", {})
        live.remove("t0")
        handed, _ = _drain(searcher, counter, live)
        assert [c[PHASE] for _, c in handed] == ["a:search"]
        for tid in list(live):  # a: 2 of 3 handed, b: 1 of 3
            searcher.on_trial_complete(tid, {})
            live.remove(tid)
        handed, _ = _drain(searcher, counter, live)
        assert [c[PHASE] for _, c in handed] == ["b:search", "a:search"], "the job behind goes first"
        for tid in list(live):
            searcher.on_trial_complete(tid, {})
            live.remove(tid)
        # a's search is over: its final begins while b still has a search trial to hand out
        handed, _ = _drain(searcher, counter, live)
        assert sorted(c[PHASE] for _, c in handed) == ["a:final", "b:search"]
        assert ("end", "a:search") in runtime.log and ("begin", "a:final") in runtime.log
        assert ("begin", "all:robust") not in runtime.log
        for tid in list(live):
            searcher.on_trial_complete(tid, {})
            live.remove(tid)
        handed, _ = _drain(searcher, counter, live)
        assert [c[PHASE] for _, c in handed] == ["b:final"], "the robust section waits for every job"
        searcher.on_trial_complete(live.pop(), {})
        handed, _ = _drain(searcher, counter, live)
        assert [c[PHASE] for _, c in handed] == ["all:robust", "all:robust"], "a job alone takes every slot"
        assert ("skip", "a:skipped") in runtime.log and ("skip", "b:skipped") in runtime.log
        for tid in list(live):
            searcher.on_trial_complete(tid, {})
            live.remove(tid)
        assert not runtime.finished
        assert searcher.suggest("last") == Searcher.FINISHED
        assert runtime.finished
        ends = [k for e, k in runtime.log if e == "end"]
        assert sorted(ends) == ["a:final", "a:search", "all:robust", "b:final", "b:search"]
        assert counter[0] == 3 + 3 + 1 + 1 + 2, "every planned trial handed out once"
    finally:
        detach("order")


def test_a_restored_searcher_hands_out_only_what_its_saved_state_had_not(tmp_path):
    runtime = Runtime({"search": 3, "final": 2})
    searcher = _searcher("restore", runtime, slots=2)
    counter, live = [0], []
    try:
        handed, _ = _drain(searcher, counter, live)
        searcher.on_trial_complete("t0", {})
        live.remove("t0")
        before = [c for _, c in handed] + [c for _, c in _drain(searcher, counter, live)[0]]
        searcher.save(str(tmp_path / "state.pkl"))

        again = Runtime({"search": 3, "final": 2})
        attach("restore", again)
        restored = SweepSearcher("restore", [], 1)
        restored.restore(str(tmp_path / "state.pkl"))
        assert sorted(k for e, k in again.log if e == "begin") == ["a:search", "b:search"], "restored phases announced"
        assert restored.slots == 2 and restored.owner == searcher.owner
        for tid in list(live):  # the trials live at the save finish after the restore
            restored.on_trial_complete(tid, {})
            live.remove(tid)
        after = []
        while True:
            handed, last = _drain(restored, counter, live)
            after += [c for _, c in handed]
            for tid in list(live):
                restored.on_trial_complete(tid, {})
                live.remove(tid)
            if last == Searcher.FINISHED:
                break
        phases = [c[PHASE] for c in before + after]
        assert sorted(phases) == sorted(["a:search"] * 3 + ["b:search"] * 3 + ["a:final"] * 2 + ["b:final"] * 2)
        assert again.finished
    finally:
        detach("restore")


@dataclass
class _Trial:
    trial_id: str
    config: dict


def test_phase_scheduler_stops_only_a_searched_phases_trials_each_on_its_own_asha():
    asha = dict(time_attr="epoch", metric="objective", mode="max", max_t=4, grace_period=1, reduction_factor=2)
    scheduler = PhaseScheduler()
    good = _Trial("g", {PHASE: "a:search", ASHA: asha, OPTUNA_TRIAL: 0})
    bad = _Trial("b", {PHASE: "a:search", ASHA: asha, OPTUNA_TRIAL: 1})
    other = _Trial("o", {PHASE: "b:search", ASHA: asha, OPTUNA_TRIAL: 0})
    grid = _Trial("f", {PHASE: "a:final"})
    for t in (good, bad, other, grid):
        scheduler.on_trial_add(None, t)
    assert scheduler.on_trial_result(None, good, {"epoch": 1, "objective": 0.9}) == TrialScheduler.CONTINUE
    assert scheduler.on_trial_result(None, bad, {"epoch": 1, "objective": 0.1}) == TrialScheduler.STOP
    # another phase's ASHA has not seen the good trial: a weak first result is not cut against it
    assert scheduler.on_trial_result(None, other, {"epoch": 1, "objective": 0.1}) == TrialScheduler.CONTINUE
    assert scheduler.on_trial_result(None, grid, {"epoch": 1, "objective": 0.0}) == TrialScheduler.CONTINUE
    restored = _Trial("r", {PHASE: "a:search", ASHA: asha, OPTUNA_TRIAL: 2})  # never added (restored after a crash)
    assert scheduler.on_trial_result(None, restored, {"epoch": 1, "objective": 0.0}) == TrialScheduler.STOP


@dataclass
class _Recorded(Runtime):
    """A runtime whose searched phase has ended trials on record (Optuna number -> objective by epoch)."""

    ended: dict = field(default_factory=dict)

    def history(self, config):
        return self.ended


def test_a_restored_phase_asha_starts_with_the_rungs_its_ended_trials_reached():
    """Tune does not save the scheduler: without its records a restored ASHA judges the trials
    after a crash against nobody. With them, as if there had been no crash: a weak first epoch is
    cut against the ended trials, and a trial that replays its record is not counted twice."""
    asha = dict(time_attr="epoch", metric="objective", mode="max", max_t=3, grace_period=1, reduction_factor=2)
    ended = {0: {1: 0.9, 2: 0.95, 3: 0.96}, 1: {1: 0.8}}  # one completed, one stopped at epoch 1
    attach("seeded", _Recorded(trials={}, ended=ended))
    try:
        scheduler, empty = PhaseScheduler("seeded"), PhaseScheduler()
        weak = lambda: _Trial("w", {PHASE: "a:search", ASHA: asha, OPTUNA_TRIAL: 2})  # noqa: E731
        assert empty.on_trial_result(None, weak(), {"epoch": 1, "objective": 0.5}) == TrialScheduler.CONTINUE
        assert scheduler.on_trial_result(None, weak(), {"epoch": 1, "objective": 0.5}) == TrialScheduler.STOP
        [(m2, at2), (m1, at1)] = scheduler._asha["a:search"]._brackets[0]._rungs
        assert (m1, m2) == (1, 2) and at1 == {"0": 0.9, "1": 0.8, "2": 0.5} and at2 == {"0": 0.95}
        replayed = _Trial("new-id", {PHASE: "a:search", ASHA: asha, OPTUNA_TRIAL: 1})  # Optuna #1 under a new Tune id
        scheduler.on_trial_result(None, replayed, {"epoch": 1, "objective": 0.8})
        assert len(at1) == 3, "a replayed trial is the same trial to its rungs"
    finally:
        detach("seeded")
