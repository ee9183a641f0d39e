from django.apps import AppConfig


class StudentPageConfig(AppConfig):
    name = "student_page"
    verbose_name = "Student page"
