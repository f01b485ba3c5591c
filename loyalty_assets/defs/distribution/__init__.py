"""Weekly distribution of the churn predictions to dashboards, the warehouse, Salesforce and marketing."""
