"""Shared Django admin pieces."""

from django.contrib import admin


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows only the product writes: roll-ups kept by the recording workers (an edit or deletion would make the
    month totals budget checks read disagree with the days they sum) and the audit log (a record of changes
    must not change)."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
