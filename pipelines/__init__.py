"""Extraction: loads Zoho CRM into the warehouse's raw schema with dlt."""
