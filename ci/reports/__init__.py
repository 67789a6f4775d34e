"""Reports: console (rich), JSON, GitHub step summary, GitLab artifacts."""
