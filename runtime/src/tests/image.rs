use super::*;

#[test]
fn maps_upscales_tiles_and_writes_png() {
    let a = GrayImage::from_signed(2, 1, &[-1.0, 1.0]).unwrap();
    assert_eq!(a.pixels, vec![0, 255]);
    assert_eq!(GrayImage::from_signed(1, 1, &[0.0]).unwrap().pixels, vec![128]);
    assert_eq!(GrayImage::from_signed(1, 1, &[-3.0]).unwrap().pixels, vec![0]);
    let u = a.upscale(2);
    assert_eq!((u.width, u.height), (4, 2));
    assert_eq!(u.pixels, vec![0, 0, 255, 255, 0, 0, 255, 255]);
    let r = GrayImage::row(&[a.clone(), a.clone()]).unwrap();
    assert_eq!(r.pixels, vec![0, 255, 0, 255]);
    let mut buf = Vec::new();
    r.write_png(&mut buf).unwrap();
    assert_eq!(&buf[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(&buf[16..24], &[0, 0, 0, 4, 0, 0, 0, 1]);
}
