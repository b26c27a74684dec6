from django.urls import path

from budgets import views

urlpatterns = [
    path("", views.overview, name="overview"),
    path("budgets/", views.budgets, name="budgets"),
    path("budgets/<int:budget_id>/", views.budget_row, name="budget-row"),
    path("budgets/<int:budget_id>/edit/", views.budget_edit, name="budget-edit"),
    path("budgets/<int:budget_id>/hard-stop/", views.budget_hard_stop, name="budget-hard-stop"),
    path("budgets/<int:budget_id>/delete/", views.budget_delete_view, name="budget-delete"),
]
