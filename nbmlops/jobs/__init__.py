"""Jobs: retraining notebooks run by papermill, their triggers and the validation gate."""
