from django.db import models


class JobRun(models.Model):
    """Last success of each scheduled job, exported as `finops_job_last_success_timestamp_seconds`.

    Kept in Postgres, not in a worker's memory, so /metrics on any API worker sees the worker's runs.
    """

    name = models.CharField(max_length=100, unique=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    last_duration_seconds = models.FloatField(null=True, blank=True)
    last_result = models.CharField(max_length=255, blank=True)
    successes = models.PositiveBigIntegerField(default=0)

    class Meta:
        db_table = "finops_job_runs"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name
