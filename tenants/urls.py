from django.urls import path

from tenants import views

urlpatterns = [
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", views.LogoutView.as_view(), name="logout"),
    path("switch-tenant/", views.tenant_switch, name="tenant-switch"),
    path("settings/api-keys/", views.api_keys, name="api-keys"),
    path("settings/api-keys/<int:key_id>/revoke/", views.api_key_revoke_view, name="api-key-revoke"),
    path("settings/members/", views.members, name="members"),
    path("settings/members/<int:membership_id>/role/", views.member_role, name="member-role"),
    path("settings/members/<int:membership_id>/remove/", views.member_remove, name="member-remove"),
    path("settings/members/invitations/", views.invitation_create_view, name="invitation-create"),
    path("settings/members/invitations/<int:invitation_id>/revoke/", views.invitation_revoke_view,
         name="invitation-revoke"),
    path("invitations/accept/", views.invitation_accept_page, name="invitation-accept"),  # before <token>
    path("invitations/<str:token>/", views.invitation_page, name="invitation"),
]

urlpatterns += [
    path("settings/webhooks/", views.webhooks, name="webhooks"),
    path("settings/webhooks/<int:endpoint_id>/toggle/", views.webhook_toggle, name="webhook-toggle"),
    path("settings/webhooks/<int:endpoint_id>/delete/", views.webhook_delete, name="webhook-delete"),
    path("settings/webhooks/<int:endpoint_id>/test/", views.webhook_test, name="webhook-test"),
]
