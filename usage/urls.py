from django.urls import path

from usage import views

urlpatterns = [
    path("activity/", views.activity, name="activity"),
    path("activity/live/", views.activity_live, name="activity-live"),
    path("activity/events/<int:event_pk>/", views.event_detail, name="event-detail"),
    path("activity/export.csv", views.activity_export, name="activity-export"),
    path("sessions/", views.sessions, name="sessions"),
    path("sessions/<path:session_id>/", views.session_detail, name="session-detail"),
    path("session/", views.session_by_query, name="session-by-query"),  # ids "." and ".." (a path cannot hold them)
    path("anomalies/", views.anomalies, name="anomalies"),
    path("anomalies/<int:anomaly_id>/acknowledge/", views.anomaly_ack, name="anomaly-ack"),
]

urlpatterns += [
    path("settings/pricing/", views.pricing, name="pricing"),
    path("settings/pricing/mode/", views.pricing_mode, name="pricing-mode"),
    path("settings/pricing/overrides/", views.pricing_override, name="pricing-override"),
    path("settings/pricing/overrides/<int:price_id>/delete/", views.pricing_override_delete,
         name="pricing-override-delete"),
    path("settings/retention/", views.retention, name="retention"),
]
