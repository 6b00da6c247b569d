"""The default executor: every job in this process, one fit after another, each followed by
its predictions, with torch's threads as benchmark/threads.py set them."""

from __future__ import annotations

import sys

from tqdm import tqdm

from benchmark import jobs
from benchmark.api import SharedComponents
from benchmark.environment import peak_rss_mb
from benchmark.jobs import task_set_key


class LocalExecutor:
    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc_info) -> None:
        return None

    def description(self) -> str:
        return "local"

    def resolve_device(self, requested: str) -> str:
        """"auto" as this machine allows; the command line has checked an explicit "cuda" already."""
        return jobs.resolve_device(requested) if requested == "auto" else requested

    def run(self, fit_jobs: list[jobs.FitJob], data, recorder, settings: jobs.FitSettings) -> None:
        components = SharedComponents()  # parts methods share, built once for the whole run
        for job in fit_jobs:
            if recorder.start(job):
                self._run_job(job, data, recorder, settings, components)

    @staticmethod
    def _run_job(job: jobs.FitJob, data, recorder, settings: jobs.FitSettings, components) -> None:
        """Fit one job and predict its task sets; a method's failure is recorded, Ctrl-C stops the run."""
        try:
            fitted = jobs.fit(job.method, job.seed, job.training_split, data, job.device, settings, components)
            jobs.probe(fitted.method, job.task_sets[0], data)  # before any record is written
            recorder.fitted(job, fitted)
            seconds = {}
            bar = tqdm(job.task_sets, desc=f"{job.label}: predicting", unit="set", disable=not settings.progress,
                       leave=False, file=sys.stderr)
            for task_set in bar:
                bar.set_postfix_str(task_set.label)
                scores, seconds[task_set_key(task_set)] = jobs.predict(fitted.method, task_set, data)
                recorder.predicted(job, task_set, scores)
            bar.close()
        except KeyboardInterrupt:
            raise
        except Exception as error:  # the method's own bug among them: report it and let the others finish
            recorder.fail(job, jobs.failure_reason(error))
            return
        recorder.finished(job, fitted.timing(seconds, peak_rss_mb()))
