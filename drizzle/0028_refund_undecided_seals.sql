-- No change of shape: a payment's seal now covers its undecided refunds (`refund_undecided`), and
-- this migration's companion (src/modules/payments/undecided-seal-upgrade.ts) reseals, in its
-- transaction, the payments whose list the release before wrote under a seal of its own. A
-- migration runs at least one statement.
SELECT 1;
