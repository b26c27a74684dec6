from django.apps import AppConfig


class BudgetsConfig(AppConfig):
    name = "budgets"
    verbose_name = "Team budgets and alerts"

    def ready(self):
        # Registers budgets.tasks in every process (web, eager mode, commands), not only in workers, since the
        # recorder enqueues budget_alerts_check by name.
        from budgets import tasks  # noqa: F401
