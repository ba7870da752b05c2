"""Cue words per return reason, written from the reason pool's definitions.

Each list holds words and short phrases Chinese customers use for that reason, from
the definition of the reason and how customer-service tickets read: broken packaging
(the box, bag or seal) as against goods broken on the way (crushed, melted, spilled);
spoiled or defective goods as against goods that are fine but not liked; and so on.
They were not taken from the labelled set's test part. A few labelled examples cannot
teach that 临期, 保质期 and 过期 mean the same; the lexicon tells the classifier once,
and the training counts decide how much each reason's cue is worth.

A cue preceded by a negation (没, 未, 无, 非, 别, 没有, 不是, 并不, 也没, 都没 ...) counts as
the reason negated (``东西没坏也没过期``), unless the cue is itself a negative phrase
(不想要, 没收到): see :func:`coordinator.intel.classifier.features`.
"""

from __future__ import annotations


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


LEXICON: dict[str, tuple[str, ...]] = {
    "packaging_damaged": _words(
        "包装破 包装坏 包装烂 包装裂 包装有破 包装是破 包装太差 包装简陋 外包装 内包装 "
        "小包装 独立包装 包装袋 外袋 外盒 外壳 袋子破 袋子漏 袋破 盒子破 盒子裂 盒子坏 盒破 "
        "盒子漏 纸箱破 箱子破 外箱 封口 封条 封膜 密封 没封 漏气 塑封 拉链 瓶盖 盖子 铝膜 "
        "真空袋 破洞 小洞 口子 破口 撕破 撕开 被拆 拆过 开封 标签 破损 胀袋 漏了 漏出 流出 "
        "渗漏 漏液"),
    "damaged_in_transit": _words(
        "压坏 压扁 压碎 压烂 压爆 压凹 压变形 压过 被压 挤压 挤坏 挤扁 摔 磕 碎了 碎成 破碎 "
        "颠 洒了 洒在 撒了 翻了 泼 化了 化掉 化水 融化 化成 化开 化冻 解冻 断冷 冷链 冰袋 "
        "是温的 不冰 淋雨 泡水 湿了 变形 瘪 扁了 运输 路上 途中 物流 快递 快递员 司机 分拣 "
        "暴力 粗暴 野蛮 扔 损坏 胀包 戳 砸 变成水"),
    "quality_defect": _words(
        "变质 变味 发霉 霉 长毛 白毛 异物 杂质 虫 蟑螂 苍蝇 头发 毛发 沙子 石子 玻璃 金属 "
        "塑料 怪味 异味 化学味 臭 馊 坏了 烂的 烂掉 腐烂 发黑 发绿 发黄 黑点 斑 不新鲜 "
        "拉肚子 拉稀 肚子疼 腹泻 呕吐 吐了 不舒服 过敏 沉淀 絮状 结块 哈喇 哈味 油哈 哈了 焦 "
        "糊 生的 没熟 不熟 没烤熟 没煮熟 夹生 瑕疵 质量 次品 残次 假货 返潮 受潮 潮了 不卫生 "
        "恶心 不敢吃 不敢喝 发酸 变酸 酸了 有问题 硬邦邦 是酸的 是苦的 发苦 变苦 反复冻"),
    "taste_mismatch": _words(
        "口味 味道 味儿 口感 好吃 难吃 好喝 难喝 不爱 爱吃 不吃 挑食 嫌弃 适口 太甜 太咸 "
        "太辣 太酸 太淡 太麻 太油 太腻 太冲 油腻 寡淡 没味 奶味 甜度 辣度 偏酸 偏甜 偏咸 "
        "偏辣 齁 吃不惯 喝不惯 吃不来 喝不来 不习惯 不合口味 合口味 不喜欢 喜欢 胃口 腥 药味 "
        "香精 甜口 咸口 辣得 酸甜 喝不下 吃不下 不正宗"),
    "wrong_item": _words(
        "发错 送错 错发 寄错 拿错 配错 装错 弄错 错成 口味错 规格错 尺码错 型号错 颜色错 "
        "款式错 品牌错 错的 不是我买 不是我要 不是我点 不是我选 不是我的 不是我拍 不是我下单 "
        "发的不是 送的不是 别人的 收到的是 来的是 发来的是 送来的是 到的是 发成 换成了 "
        "规格不对 型号不对 颜色不对 品牌不对 款不对 货不对 东西不对 尺码 不符 货不对板 "
        "对不上 买的是 要的是 订的是 点的是 拍的是 选的是"),
    "missing_item": _words(
        "少件 少发 漏发 少了 少给 缺 没收到 只收到 只来 只到 少一 少两 数量不对 数量不够 "
        "不够数 不齐 赠品 赠送 没给 没放 没配 没附 漏放 漏装 漏送 少装 补发 实际 空了 空盒 "
        "配件"),
    "near_expiry": _words(
        "过期 临期 保质期 保质 到期 生产日期 日期 效期 快过期 即将过期 临近 批次 老货 旧货 "
        "陈货 库存货 去年 年前 只剩 还剩 最后一天 新货"),
    "late_delivery": _words(
        "晚 太慢 送慢 很慢 发货慢 慢死 超时 迟 延误 延迟 延时 拖 等了 太久 很久 才到 才送 "
        "才收到 才发 还没到 还没送 还没收到 没送到 到现在 次日达 准时 约定 约的 预计 时效 "
        "小时 一周 几天了 不动 错过"),
    "changed_mind": _words(
        "不想要 不需要 不要了 用不上 用不到 用不着 没必要 不用了 拍错 买错 点错 选错 下错单 "
        "买多 多买 多拍 拍多 误拍 误买 改主意 无理由 重复购买 买重 冲动 手滑 便宜 划算 买贵 "
        "别家 不值 后悔 想取消 要取消 犹豫 家里有 家里还有 不打算 送人 不想 就是想退 "
        "只是想退 单纯想退 不太想 用不完 没看清 取消"),
    "other": _words(
        "发票 开票 专票 抬头 地址 电话 收货人 客服 售后 联系不上 不回 态度 投诉 举报 咨询 "
        "问一下 请问 怎么 如何 能不能 会员 积分 优惠券 满减 补差价 差价 价保 保价 降价 运费 "
        "邮费 扣款 扣了 重复扣 付款 支付 到账 退款 账号 密码 隐私 盗 驿站 自提 上门 签收 "
        "本人 说明书 环保 其他 物流信息 不更新 续费 被取消 门店 莫名其妙 楼下"),
}
