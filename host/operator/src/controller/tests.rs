use super::*;

#[test]
fn a_reconcile_error_is_logged_with_each_cause_in_words() {
    let error = Error::Provisioner(ProvisionerError::Rejected {
        call: "power",
        message: "the BMC answered HTTP 503".into(),
    });

    assert_eq!(
        error_chain(&error),
        "provisioner call failed: provisioner call power was refused: the BMC answered HTTP 503"
    );
}
