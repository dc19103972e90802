"""The attack stages' tasks, one module per attack family; the maths stays in attacks/*.py."""
