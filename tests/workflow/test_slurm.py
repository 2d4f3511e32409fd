"""The SLURM profile: how Snakemake resolves it, and a real run through a local SLURM cluster.

The slow test starts a single-node SLURM cluster with scripts/local-slurm.sh (root + Debian packages; at the end of
the session it stops the daemons only if it started them, and uninstalls the packages only if it installed them;
keep a cluster running with `make local-slurm` to iterate quickly), runs the default workflow on a small config through
`snakemake --profile profiles/slurm`, checks in SLURM's own job table that every non-local job ran as a SLURM job,
and that the outputs are byte-identical to a local run. To cover a new rule, give it a config section in
`slurm_config` and, if its outputs are deterministic, add their glob to `COMPARED`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from mibench.cluster import ProfileInstallError, install_profile
from tests.support.configs import REPO, write_config

SCRIPT = REPO / "scripts" / "local-slurm.sh"
# Outputs that are pure functions of the config, compared byte for byte with a local run.
COMPARED = ("results/meta/*/shard-*.parquet", "results/meta/splits-disjoint.json")
SNAKEMAKE_TIMEOUT_S = 420  # a few 5-10 s jobs + status polling take ~45 s here; fail, don't hang, beyond that


def parsed_profile(cwd: Path, profile: str, env: dict[str, str]) -> dict:
    """The options Snakemake itself derives from `--profile PROFILE` (and the workflow profile) in `cwd`."""
    code = (
        "import json, sys\n"
        "from snakemake.cli import parse_args\n"
        "_, a = parse_args(['--profile', sys.argv[1], '-n'])\n"
        "print(json.dumps({'executor': a.executor, 'jobs': a.jobs, 'latency_wait': a.latency_wait,\n"
        "    'status': getattr(a, 'slurm_status_command', None), 'retries': a.retries,\n"
        "    'resources': sorted(a.default_resources or {}), 'profile': a.profile}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, profile], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    if proc.returncode != 0:
        return {"error": proc.stdout + proc.stderr}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def assert_is_slurm_profile(parsed: dict) -> None:
    assert parsed.get("executor") == "slurm", parsed
    assert parsed["status"] == "squeue"
    # 60, not 5: the workflow profile (profiles/default) overrides --profile keys and must not set latency-wait
    assert parsed["latency_wait"] == 60
    assert parsed["retries"] == 1
    assert {"mem_mb", "runtime"} <= set(parsed["resources"])


@pytest.mark.parametrize("profile", ["profiles/slurm", "slurm"])
def test_profile_resolves_from_the_repository_root(profile, venv_env) -> None:
    assert_is_slurm_profile(parsed_profile(REPO, profile, venv_env))


def test_bare_name_resolves_anywhere_after_install_profile(tmp_path, venv_env) -> None:
    env = dict(venv_env, HOME=str(tmp_path / "home"), XDG_CONFIG_HOME=str(tmp_path / "xdg"))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH")]))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    if not Path("/etc/xdg/snakemake/slurm").exists():  # a site-wide profile would be found instead
        before = parsed_profile(elsewhere, "slurm", env)
        assert "no profile.yaml (or config.yaml) found" in before.get("error", ""), before

    cmd = [sys.executable, "-m", "mibench.cli", "install-profile"]
    proc = subprocess.run(cmd, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    link = tmp_path / "xdg" / "snakemake" / "slurm"
    assert link.is_symlink() and link.resolve() == REPO / "profiles" / "slurm"
    assert_is_slurm_profile(parsed_profile(elsewhere, "slurm", env))
    again = subprocess.run(cmd, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr  # idempotent


def test_install_profile_never_clobbers_another_profile(tmp_path) -> None:
    root = tmp_path / "profiles-root"
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.yaml").write_text("executor: local\n")
    link = install_profile(other, name="slurm", root=root)
    with pytest.raises(ProfileInstallError, match="--force"):
        install_profile(REPO / "profiles" / "slurm", root=root)
    assert install_profile(REPO / "profiles" / "slurm", root=root, force=True) == link
    assert link.resolve() == REPO / "profiles" / "slurm"
    link.unlink()
    link.mkdir()  # the user's own profile folder is never replaced, even with force
    with pytest.raises(ProfileInstallError, match="not a symlink"):
        install_profile(REPO / "profiles" / "slurm", root=root, force=True)
    with pytest.raises(ProfileInstallError, match="no profile.yaml or config.yaml"):
        install_profile(tmp_path, name="empty", root=root)


def test_local_slurm_script_rejects_unknown_commands() -> None:
    proc = subprocess.run(["bash", str(SCRIPT), "restart"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "usage:" in proc.stderr


# ---------------------------------------------------------------------------------------------- the real cluster


def run_script(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    # timeout -k: the script's apt/daemon waits are bounded; KILL if it ignores TERM.
    cmd = ["timeout", "-k", "10", str(timeout), "bash", str(SCRIPT), *args]
    return subprocess.run(cmd, capture_output=True, text=True)


@pytest.fixture(scope="session")
def slurm_cluster():
    """A local SLURM cluster: reuse a running one, else start it, and stop (or uninstall) it after the session."""
    if sys.platform != "linux" or shutil.which("timeout") is None:
        pytest.skip("the local SLURM cluster needs Linux")
    if run_script("status", timeout=30).returncode == 0:
        yield False
        return
    can_start = os.geteuid() == 0 and (shutil.which("apt-get") or shutil.which("slurmctld"))
    if not can_start:
        reason = "no running local SLURM cluster, and starting one needs root and apt-get (scripts/local-slurm.sh)"
        if os.environ.get("MIBENCH_REQUIRE_SLURM") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    installed_before = shutil.which("sinfo") is not None
    start = run_script("start")
    try:
        assert start.returncode == 0, f"scripts/local-slurm.sh failed:\n{start.stdout}\n{start.stderr[-4000:]}"
        yield True
    finally:
        # Leave the machine as found. Installed-but-stopped SLURM would slow every later snakemake start by ~10 s
        # (the plugin's `scontrol show config` probe), so packages this session installed go again.
        run_script("stop" if installed_before else "uninstall", timeout=300)


def slurm_jobs(workdir: Path) -> list[dict[str, str]]:
    """SLURM's job table (incl. finished jobs, kept for MinJobAge) for jobs that ran in `workdir`."""
    fmt = "%i|%j|%k|%T|%Z"
    out = subprocess.run(
        ["squeue", "-h", "-t", "all", "-o", fmt], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    keys = ("id", "name", "comment", "state", "workdir")
    jobs = [dict(zip(keys, line.split("|"), strict=True)) for line in out.splitlines() if line.strip()]
    return [job for job in jobs if Path(job["workdir"]).resolve() == workdir.resolve()]


def cancel_jobs(workdir: Path) -> None:
    pending = [job["id"] for job in slurm_jobs(workdir) if job["state"] in ("PENDING", "RUNNING", "CONFIGURING")]
    if pending:
        subprocess.run(["scancel", *pending], capture_output=True, timeout=60)


def run_snakemake(workdir: Path, env: dict[str, str], *args: str) -> str:
    """Run Snakemake from the repository root on `workdir`; SIGKILL its process group on timeout.

    SIGTERM would make Snakemake wait for its running jobs, possibly forever, hence the kill.
    """
    cmd = [sys.executable, "-m", "snakemake", "--directory", str(workdir), *args]
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        out, _ = proc.communicate(timeout=SNAKEMAKE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise AssertionError(f"snakemake {' '.join(args)} ran over {SNAKEMAKE_TIMEOUT_S}s:\n{out[-4000:]}") from None
    assert proc.returncode == 0, f"snakemake {' '.join(args)} failed:\n{out[-6000:]}"
    return out


def job_stats(output: str) -> Counter:
    """The 'Job stats' table Snakemake prints before running: jobs per rule."""
    lines = output[output.index("Job stats:") :].splitlines()[3:]
    counts = Counter()
    for line in lines:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit() or parts[0] == "total":
            break
        counts[parts[0]] = int(parts[1])
    return counts


def slurm_config(tiny_config: dict) -> dict:
    """The tiny config with one shard per split: each SLURM job costs ~5-10 s plus status polling."""
    tiny_config["meta"]["shard_size"] = 1000
    return tiny_config


def outputs(workdir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(workdir)): p.read_bytes() for pattern in COMPARED for p in sorted(workdir.glob(pattern))}


@pytest.mark.slow
def test_default_workflow_through_slurm_equals_a_local_run(slurm_cluster, tiny_config, venv_env, tmp_path) -> None:
    config = slurm_config(tiny_config)
    env = dict(venv_env, OMP_NUM_THREADS="1")
    # Jobs are submitted with --export=ALL: they need this interpreter's snakemake on PATH and this checkout's src.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH")]))
    local, cluster = tmp_path / "local", tmp_path / "slurm"
    for workdir in (local, cluster):
        write_config(workdir / "config" / "config.yaml", config)

    run_snakemake(local, env, "--cores", "2")
    try:
        out = run_snakemake(cluster, env, "--profile", "profiles/slurm")
    finally:
        cancel_jobs(cluster)

    # Every job that is not a localrule went through SLURM, under this run's ID, and completed.
    run_id = re.search(r"SLURM run ID: (\S+)", out).group(1)
    jobs = [job for job in slurm_jobs(cluster) if job["name"] == run_id]
    assert {job["state"] for job in jobs} == {"COMPLETED"}, jobs
    submitted = set(re.findall(r"has been submitted with SLURM jobid (\d+)", out))
    assert submitted == {job["id"] for job in jobs}
    ran = Counter(re.match(r"rule_(\w+?)(?:_wildcards_.*)?$", job["comment"]).group(1) for job in jobs)
    local_rules = set(re.findall(r"^localrule (\w+):", out, re.MULTILINE))
    planned = job_stats(out)
    assert local_rules == {"all"}
    assert ran == Counter({rule: n for rule, n in planned.items() if rule not in local_rules})
    assert ran["generate_shard"] == len(config["meta"]["splits"])

    expected, got = outputs(local), outputs(cluster)
    assert expected, "the local run produced none of the compared outputs"
    assert sorted(got) == sorted(expected)
    differing = [path for path in expected if got[path] != expected[path]]
    assert not differing, f"SLURM outputs differ from the local run: {differing}"


GPU_SNAKEFILE = """
rule gpu_job:
    output: "gpu.txt"
    resources: gpu=1
    shell: "nvidia-smi -L > {output}"

rule gres_job:
    output: "gres.txt"
    resources: gpu=1
    shell: "nvidia-smi -L > {output}"
"""


@pytest.mark.slow
def test_gpu_requests_reach_sbatch_as_documented(slurm_cluster, venv_env, tmp_path) -> None:
    """`gpu=1` becomes `--gpus=1`; the documented GRES override (gpu=0 + gres) becomes `--gres=...`.

    The local cluster has no GPUs, so SLURM itself rejects both requests: proof that they reached sbatch.
    """
    (tmp_path / "Snakefile").write_text(GPU_SNAKEFILE)
    cmd = [
        sys.executable, "-m", "snakemake", "--profile", str(REPO / "profiles" / "slurm"), "--retries", "0",
        "--set-resources", "gres_job:gpu=0", "gres_job:gres=gpu:1", "--", "gpu.txt", "gres.txt",
    ]  # fmt: skip
    try:
        proc = subprocess.run(cmd, cwd=tmp_path, env=venv_env, capture_output=True, text=True, timeout=120)
    finally:
        cancel_jobs(tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    calls = {m.group(1): m.group(0) for m in re.finditer(r"sbatch --parsable .*?--comment rule_(\w+) .*", out)}
    assert set(calls) == {"gpu_job", "gres_job"}, out[-4000:]
    assert " --gpus=1" in calls["gpu_job"] and "--gres" not in calls["gpu_job"]
    assert " --gres=gpu:1" in calls["gres_job"] and "--gpus" not in calls["gres_job"]
    assert out.count("Invalid generic resource (gres) specification") == 2
    assert not slurm_jobs(tmp_path)  # rejected at submission: nothing ran
