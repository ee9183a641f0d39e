from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class BackofficeConfig(AppConfig):
    name = "backoffice"
    verbose_name = "Back office"


class BackofficeAdminConfig(admin_apps.AdminConfig):
    """`django.contrib.admin` with the back office's site as the default (backoffice/site.py). Named in
    INSTALLED_APPS in its place; never this module's default (that is `BackofficeConfig`)."""

    default = False
    default_site = "backoffice.site.BackofficeAdminSite"
