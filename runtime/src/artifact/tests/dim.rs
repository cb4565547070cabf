use super::*;

#[test]
fn binds_and_checks_expressions() {
    let s = |n: &str| DimExpr::Sym(n.into());
    let x = [s("batch"), DimExpr::Const(4), s("h")];
    let y = [s("batch"), DimExpr::Mul(vec![DimExpr::Const(2), s("h")])];
    let b = bind(&[("x", &x, &[2, 4, 3]), ("y", &y, &[2, 6])]).unwrap();
    assert_eq!(b["batch"], 2);
    assert_eq!(b["h"], 3);
    let e = bind(&[("x", &x, &[2, 4, 3]), ("y", &y, &[2, 7])]).unwrap_err();
    assert!(e.contains("`y`") && e.contains("(2*h)") || e.contains("2*h"), "{e}");
    let e = bind(&[("x", &x, &[2, 5, 3])]).unwrap_err();
    assert!(e.contains("`x`") && e.contains("[batch,4,h]"), "{e}");
    let e = bind(&[("x", &x, &[2, 4])]).unwrap_err();
    assert!(e.contains("[2, 4]"), "{e}");
    assert!(DimExpr::Div(Box::new(s("h")), 2).eval(&b).unwrap_err().contains("not divisible"));
    let j = serde_json::to_string(&y[1]).unwrap();
    assert_eq!(serde_json::from_str::<DimExpr>(&j).unwrap(), y[1]);
}
