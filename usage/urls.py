from django.urls import path

from usage import views

urlpatterns = [
    path("activity/", views.activity, name="activity"),
    path("activity/live/", views.activity_live, name="activity-live"),
    path("activity/export.csv", views.activity_export, name="activity-export"),
    path("sessions/", views.sessions, name="sessions"),
    path("sessions/<path:session_id>/", views.session_detail, name="session-detail"),
    path("anomalies/", views.anomalies, name="anomalies"),
    path("anomalies/<int:anomaly_id>/acknowledge/", views.anomaly_ack, name="anomaly-ack"),
]
