"""Resources that more than one domain of the graph uses (the mailer: marketing e-mail and alerts)."""
